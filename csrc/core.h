/* Internal interface between the parts of analytics_engine.core: what more
 * than one file uses is declared here, once. Each ae_open_* adds its
 * functions to the module table at the top of the stack. */
#ifndef AE_CORE_H
#define AE_CORE_H
#include <stddef.h>

#include "compat.h"

#define AE_CORE_VERSION "0.1.0"

void ae_open_http(lua_State *L);    /* http.c: http_session */
void ae_open_server(lua_State *L);  /* server.c: http_server */
void ae_open_process(lua_State *L); /* process.c: spawn, wait, kill, getpid, signals */
void ae_open_fs(
    lua_State *L); /* fs.c: file_mode, mkdir_p, realpath, isatty, write_file_atomic, lock_file */
void ae_open_digest(lua_State *L);    /* digest.c: sha256, hmac_sha256, random_bytes */
void ae_open_websocket(lua_State *L); /* ws.c: ws_connect, wait_fds (wslay) */
void ae_open_sqlite(lua_State *L);    /* sqlite.c: sqlite_open */
void ae_open_bounds(lua_State *L);    /* bounds.c: memory_limit, hard_deadline */
void ae_open_fs_sync(lua_State *L);   /* fs_sync.c: append_start (a sync on its own thread) */

int luaopen_analytics_engine_core(lua_State *L);

/* process.c: how many watched signals have arrived (wrapping). A wait that
 * should end on a signal compares it before and after. */
int ae_signal_count(void);

/* fs.c: a journal append (append_file, fs_sync.c's append_start). */
#include <sys/types.h>
int ae_append_write(const char *path, const char *s, size_t n, off_t *size);
void ae_append_undo(int fd, off_t size);

/* digest.c */
void ae_sha1(const void *a, size_t alen, const void *b, size_t blen, unsigned char out[20]);
void ae_base64(const unsigned char *in, size_t n, char *out); /* out: 4*ceil(n/3)+1 bytes */
int ae_random_fill(void *buf, size_t len);                    /* 0, or -1 with errno */

/* http_response.c: a libcurl result (CURLcode) as an error kind: "timeout",
 * "connect", "resolve", "tls", "send", "recv", "too_large", "aborted", "other". */
const char *ae_curl_kind(int rc);

/* 1 when s[0..len) has CR, LF or NUL: such a value must not reach a header. */
static inline int ae_has_ctl(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}
#endif

/* Shared by the libFuzzer targets: a Lua 5.4 state with analytics_engine.core
 * linked in (the instrumented build-fuzz objects) and the Lua modules of this
 * source tree on package.path. */
#ifndef AE_FUZZ_COMMON_H
#define AE_FUZZ_COMMON_H
#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* A new state; aborts on failure (a broken harness must not look like a find). */
lua_State *fuzz_lua_state(void);
/* Run a chunk; aborts with its message on error. */
void fuzz_lua_do(lua_State *L, const char *chunk);
/* Call global function `fn` with one string argument under pcall; aborts on a
 * Lua error (every error the core may raise on network input is a bug). */
void fuzz_lua_call(lua_State *L, const char *fn, const char *arg, size_t len);

/* A loopback listener on its own thread, for targets whose input is what a
 * peer sends. For each connection it calls `fn` with the socket (send and
 * receive timeouts of `timeout_s` seconds) and a private copy of the current
 * answer, then closes the socket and counts the connection as served. */
typedef void (*fuzz_conn_fn)(int fd, const unsigned char *answer, size_t len);
/* A Lua state (fuzz_lua_state) that has run `setup`, and the listener
 * started; *port gets its port. */
lua_State *fuzz_listener_start(const char *setup, fuzz_conn_fn fn, int timeout_s, int *port);
/* One input: `data` becomes the answer for the next connection, global `fn`
 * is called with `arg` (fuzz_lua_call), then it waits (up to 3 s) until that
 * connection was served, so the next input is not answered with this one's
 * leftovers. */
void fuzz_listener_run(lua_State *L, const char *fn, const char *arg, size_t len,
                       const unsigned char *data, size_t size);
/* Socket helpers for the answer functions: read a request head (up to the
 * blank line, NUL-terminated) into req, 0 when complete; write everything,
 * 0 when done. */
int fuzz_read_head(int fd, char *req, size_t cap);
int fuzz_send_all(int fd, const void *buf, size_t len);
#endif

/* The WebSocket handle's insides, shared by ws_frame.c (wslay glue, I/O,
 * stepping and waiting), ws_client.c (libcurl CONNECT_ONLY and the Upgrade
 * handshake), ws_server.c (a socket libmicrohttpd upgraded) and ws.c (the
 * methods Lua calls). Other parts of the core see only ws.h. */
#ifndef AE_WS_FRAME_H
#define AE_WS_FRAME_H
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "core.h"
#include "ws.h"

#define WS_MT "analytics_engine.WebSocket"
#define DEFAULT_MAX_MESSAGE (16.0 * 1024 * 1024)

enum {
  WS_CLOSED,
  WS_CONNECTING,
  WS_HS_SEND,
  WS_HS_RECV,
  WS_UPGRADING,
  WS_OPEN,
  WS_ENDED,
  WS_FAILED
};

typedef struct wsmsg {
  struct wsmsg *next;
  int opcode;
  size_t len;
  char data[];
} wsmsg;

/* The source of one outgoing fragmented message. */
typedef struct frag {
  struct frag *next;
  char *data;
  size_t len, off, step;
  int done;
} frag;

struct ae_ws {
  int state, is_server, control, shutdown_called, eof;
  int hs_done; /* the upgrade succeeded (even if frames right after it end the connection) */
  /* server side after it closed for a bad message: read and drop until the
   * peer closes, so our close frame is not lost to a TCP reset; but only
   * until discard_until (a peer that never closes must not hold it) */
  int discard;
  double discard_until;
  const char *discard_kind;
  char discard_msg[160];
  /* server side: a frame that has started must be whole within
   * frame_timeout (<= 0: none); rx_total counts bytes read, rx_framed the
   * bytes of the frames wslay finished, so a difference is a frame under
   * way (a bare header claiming 2^63 bytes, too) since frame_since (0: none) */
  double frame_timeout, frame_since;
  double last_frame; /* the last whole frame (or the upgrade): eviction order */
  uint64_t rx_total, rx_framed, frame_len;
  int fd;
  CURLM *multi;
  CURL *easy;
  wslay_event_context_ptr ctx;
  ae_buf out; /* handshake request */
  size_t out_off;
  ae_buf in; /* handshake response (client), then bytes that came after it */
  size_t in_off;
  char accept[32];
  wsmsg *head, *tail;
  size_t nmsg;
  frag *frags;
  uint64_t max_msg;
  /* the first failure, reported by every later call */
  const char *err_kind;
  char err_msg[256];
  long err_status;
  char *err_body;
  size_t err_body_len;
  /* close handshake */
  int close_code;
  char close_reason[126];
  /* server side: the owner (server_ws.c) releases the MHD upgrade handle */
  void *owner, *urh;
  ae_ws_release_fn release;
  char errbuf[CURL_ERROR_SIZE];
};

/* ---- SHA-1 and base64 (for Sec-WebSocket-Accept) ------------------------- */

/* ws_frame.c */
void ws_fail(ae_ws *w, const char *kind, const char *fmt, ...);
void ws_fail_curl(ae_ws *w, const char *what, CURLcode rc);
/* raw I/O: > 0 bytes, 0 end of stream, -1 would block, -2 failed (recorded) */
ssize_t ws_io_recv(ae_ws *w, void *buf, size_t len);
ssize_t ws_io_send(ae_ws *w, const void *buf, size_t len);
int ws_make_ctx(ae_ws *w);
/* Queue one message, in fragments of `step` bytes when 0 < step < len; a
 * wslay result (WSLAY_ERR_NOMEM when out of memory). */
int ws_queue(ae_ws *w, const char *data, size_t len, int binary, size_t step);
void ws_release(lua_State *L, ae_ws *w);
void ws_step(ae_ws *w);
int ws_run(ae_ws *w, double deadline, int (*done)(ae_ws *));

/* ws_client.c */
void ws_client_step(ae_ws *w); /* connect, send the request, read the 101 */
int ws_l_connect(lua_State *L);

/* ws.c */
ae_ws *ws_new_handle(lua_State *L, uint64_t max_msg, int control);
uint64_t ws_opt_max_msg(lua_State *L, int idx);
#endif

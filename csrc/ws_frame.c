/* WebSocket framing for both ends: wslay's event API over a socket (a
 * client's libcurl CONNECT_ONLY handle, or the fd libmicrohttpd hands over
 * after an upgrade), with framing, masking, fragmentation, ping/pong
 * replies, the close handshake and the size limit; and the non-blocking
 * step and the wait every operation is made of. No wslay or libcurl
 * callback touches Lua: failures are stashed in the handle and reported
 * after the library call has returned. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>

#include "clock.h"
#include "ws_frame.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key .. GUID)). */
void ae_ws_accept_key(const char *key, size_t klen, char out[29]) {
  unsigned char d[20];
  ae_sha1(key, klen, WS_GUID, sizeof WS_GUID - 1, d);
  ae_base64(d, 20, out);
}

/* ---- errors ---------------------------------------------------------------- */

void ws_fail(ae_ws *w, const char *kind, const char *fmt, ...) {
  va_list ap;
  if (w->err_kind) return; /* the first failure is the one to report */
  w->err_kind = kind;
  va_start(ap, fmt);
  /* the analyzer loses va_start across the early return above */
  /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized) */
  vsnprintf(w->err_msg, sizeof w->err_msg, fmt, ap);
  va_end(ap);
  if (w->state != WS_CLOSED) w->state = WS_FAILED;
}

void ws_fail_curl(ae_ws *w, const char *what, CURLcode rc) {
  size_t n = strlen(w->errbuf);
  while (n > 0 && (w->errbuf[n - 1] == '\n' || w->errbuf[n - 1] == '\r')) w->errbuf[--n] = '\0';
  if (n > 0) ws_fail(w, ae_curl_kind(rc), "%s: %s: %s", what, curl_easy_strerror(rc), w->errbuf);
  else ws_fail(w, ae_curl_kind(rc), "%s: %s", what, curl_easy_strerror(rc));
}

/* ---- raw I/O: > 0 bytes, 0 end of stream, -1 would block, -2 failed --------- */

ssize_t ws_io_recv(ae_ws *w, void *buf, size_t len) {
  if (w->easy) {
    size_t n = 0;
    CURLcode rc = curl_easy_recv(w->easy, buf, len, &n);
    if (rc == CURLE_AGAIN) return -1;
    if (rc != CURLE_OK) {
      ws_fail_curl(w, "websocket receive", rc);
      return -2;
    }
    return (ssize_t)n;
  }
  for (;;) {
    ssize_t n = recv(w->fd, buf, len, 0);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    ws_fail(w, "recv", "websocket receive: %s", strerror(errno));
    return -2;
  }
}

ssize_t ws_io_send(ae_ws *w, const void *buf, size_t len) {
  if (w->easy) {
    size_t n = 0;
    CURLcode rc = curl_easy_send(w->easy, buf, len, &n);
    if (rc == CURLE_AGAIN) return -1;
    if (rc != CURLE_OK) {
      ws_fail_curl(w, "websocket send", rc);
      return -2;
    }
    return (ssize_t)n;
  }
  for (;;) {
    ssize_t n = send(w->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    ws_fail(w, "send", "websocket send: %s", strerror(errno));
    return -2;
  }
}

/* ---- wslay callbacks (no Lua in here) ------------------------------------- */

static ssize_t cb_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud) {
  ae_ws *w = ud;
  ssize_t n;
  (void)flags;
  if (w->in_off < w->in.len) { /* bytes that arrived with the handshake */
    size_t k = w->in.len - w->in_off < len ? w->in.len - w->in_off : len;
    memcpy(buf, w->in.p + w->in_off, k);
    w->in_off += k;
    w->rx_total += k;
    return (ssize_t)k;
  }
  n = ws_io_recv(w, buf, len);
  if (n > 0) {
    w->rx_total += (uint64_t)n;
    return n;
  }
  if (n == -1) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (n == 0) w->eof = 1;
  wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

static ssize_t cb_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud) {
  ae_ws *w = ud;
  ssize_t n = ws_io_send(w, data, len);
  (void)flags;
  if (n >= 0) return n;
  wslay_event_set_error(ctx, n == -1 ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

static int cb_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
  (void)ud;
  if (ae_random_fill(buf, len) == 0) return 0;
  wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

static void cb_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud) {
  ae_ws *w = ud;
  wsmsg *m;
  (void)ctx;
  if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
    size_t n = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
    if (n >= sizeof w->close_reason) n = sizeof w->close_reason - 1;
    w->close_code = arg->status_code ? arg->status_code : 1005;
    if (n) memcpy(w->close_reason, arg->msg + 2, n);
    w->close_reason[n] = '\0';
    return;
  }
  if ((arg->opcode == WSLAY_PING || arg->opcode == WSLAY_PONG) && !w->control) return;
  m = malloc(sizeof *m + arg->msg_length + 1);
  if (!m) { /* reported after wslay_event_recv returns */
    ws_fail(w, "other", "websocket: out of memory for a %lu-byte message",
            (unsigned long)arg->msg_length);
    return;
  }
  m->next = NULL;
  m->opcode = arg->opcode;
  m->len = arg->msg_length;
  if (m->len) memcpy(m->data, arg->msg, m->len);
  if (w->tail) w->tail->next = m;
  else w->head = m;
  w->tail = m;
  w->nmsg++;
}

static ssize_t cb_frag(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       const union wslay_event_msg_source *source, int *eof, void *ud) {
  frag *f = source->data;
  size_t k = f->len - f->off;
  (void)ctx, (void)ud;
  if (k > f->step) k = f->step;
  if (k > len) k = len;
  if (k) memcpy(buf, f->data + f->off, k);
  f->off += k;
  if (f->off == f->len) {
    *eof = 1;
    f->done = 1;
  }
  return (ssize_t)k;
}

/* A frame's header and payload are known (wslay refuses lengths that are
 * not in their shortest form, so the header's size follows from them). */
static void cb_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud) {
  ae_ws *w = ud;
  uint64_t n = arg->payload_length;
  (void)ctx;
  w->frame_len = 2 + (n >= 65536 ? 8 : n >= 126 ? 2 : 0) + (w->is_server ? 4 : 0) + n;
}

static void cb_frame_end(wslay_event_context_ptr ctx, void *ud) {
  ae_ws *w = ud;
  (void)ctx;
  w->rx_framed += w->frame_len;
  w->frame_len = 0;
  w->last_frame = ae_clock_mono();
}

/* ---- lifecycle ------------------------------------------------------------- */

int ws_make_ctx(ae_ws *w) {
  struct wslay_event_callbacks cbs = {cb_recv, cb_send,      cb_genmask, cb_frame_start,
                                      NULL,    cb_frame_end, cb_msg};
  int r = w->is_server ? wslay_event_context_server_init(&w->ctx, &cbs, w)
                       : wslay_event_context_client_init(&w->ctx, &cbs, w);
  if (r != 0) {
    w->ctx = NULL;
    return -1;
  }
  wslay_event_config_set_max_recv_msg_length(w->ctx, w->max_msg);
  return 0;
}

static void free_frags(ae_ws *w, int only_done) {
  frag **p = &w->frags;
  while (*p) {
    frag *f = *p;
    if (only_done && !f->done) {
      p = &f->next;
      continue;
    }
    *p = f->next;
    free(f->data);
    free(f);
  }
}

/* Release everything; idempotent. */
void ws_release(lua_State *L, ae_ws *w) {
  while (w->head) {
    wsmsg *m = w->head;
    w->head = m->next;
    free(m);
  }
  w->tail = NULL;
  w->nmsg = 0;
  if (w->ctx) wslay_event_context_free(w->ctx);
  w->ctx = NULL;
  free_frags(w, 0);
  if (w->easy) {
    if (w->multi) curl_multi_remove_handle(w->multi, w->easy);
    curl_easy_cleanup(w->easy);
    w->easy = NULL;
  }
  if (w->multi) curl_multi_cleanup(w->multi);
  w->multi = NULL;
  ae_buf_free(&w->out);
  ae_buf_free(&w->in);
  free(w->err_body);
  w->err_body = NULL;
  w->out_off = w->in_off = 0;
  if (w->release) { /* server side: MHD closes the socket */
    ae_ws_release_fn fn = w->release;
    w->release = NULL;
    fn(L, w->owner, w, w->urh);
  }
  w->owner = w->urh = NULL;
  w->fd = -1;
  w->state = WS_CLOSED;
}

int ws_queue(ae_ws *w, const char *data, size_t len, int binary, size_t step) {
  int r;
  if (step > 0 && step < len) {
    struct wslay_event_fragmented_msg fm;
    frag *f = calloc(1, sizeof *f);
    if (f) f->data = malloc(len);
    if (!f || !f->data) {
      free(f);
      return WSLAY_ERR_NOMEM;
    }
    memcpy(f->data, data, len);
    f->len = len;
    f->step = step;
    fm.opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
    fm.source.data = f;
    fm.read_callback = cb_frag;
    r = wslay_event_queue_fragmented_msg(w->ctx, &fm);
    if (r != 0) {
      free(f->data);
      free(f);
    } else {
      f->next = w->frags;
      w->frags = f;
    }
  } else {
    struct wslay_event_msg m;
    m.opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
    m.msg = (const uint8_t *)data;
    m.msg_length = len;
    r = wslay_event_queue_msg(w->ctx, &m); /* copies the data */
  }
  return r;
}

/* How long a server reads and drops after closing for a bad message. */
#define WS_DISCARD_SECONDS 2.0

/* The connection ended: say why, from wslay's view of the close handshake. */
static void finish_io(ae_ws *w) {
  uint16_t sent = wslay_event_get_status_code_sent(w->ctx);
  if (w->is_server && !w->eof && !wslay_event_get_close_received(w->ctx) &&
      (sent == WSLAY_CODE_MESSAGE_TOO_BIG || sent == WSLAY_CODE_PROTOCOL_ERROR ||
       sent == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA)) {
    w->discard = 1;
    w->discard_until = ae_clock_mono() + WS_DISCARD_SECONDS;
    w->discard_kind = sent == WSLAY_CODE_MESSAGE_TOO_BIG ? "too_large" : "protocol";
    if (sent == WSLAY_CODE_MESSAGE_TOO_BIG)
      snprintf(w->discard_msg, sizeof w->discard_msg,
               "websocket: a message exceeds max_message_size (%llu bytes); closed with 1009",
               (unsigned long long)w->max_msg);
    else
      snprintf(w->discard_msg, sizeof w->discard_msg,
               "websocket: the peer broke the protocol; closed with %u", (unsigned)sent);
    return;
  }
  /* ENDED twice: a close frame from the peer wins over the reasons below */
  if (wslay_event_get_close_received(w->ctx)) { /* NOLINT(bugprone-branch-clone) */
    w->state = WS_ENDED;
  } else if (sent == WSLAY_CODE_MESSAGE_TOO_BIG) {
    ws_fail(w, "too_large",
            "websocket: a message exceeds max_message_size (%llu bytes); closed with 1009",
            (unsigned long long)w->max_msg);
  } else if (sent == WSLAY_CODE_PROTOCOL_ERROR || sent == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA) {
    ws_fail(w, "protocol", "websocket: the peer broke the protocol; closed with %u",
            (unsigned)sent);
  } else if (w->eof) {
    ws_fail(w, "closed", "websocket: the connection closed without a close frame");
    w->close_code = 1006;
  } else if (!w->err_kind) {
    w->state = WS_ENDED;
  }
}

static void step_io(ae_ws *w) {
  int r;
  if (w->discard) {
    char buf[16384];
    int i;
    for (i = 0; i < 64; i++) { /* at most 1 MiB a step: a fast peer cannot hold the loop */
      ssize_t n = ws_io_recv(w, buf, sizeof buf);
      if ((n > 0 || n == -1) && ae_clock_mono() < w->discard_until) {
        if (n > 0) continue;
        return; /* nothing to read now: wait for the peer's end */
      }
      w->discard = 0;
      w->err_kind = NULL;
      ws_fail(w, w->discard_kind, "%s", w->discard_msg);
      return;
    }
    return;
  }
  if (wslay_event_want_read(w->ctx)) {
    r = wslay_event_recv(w->ctx);
    if (w->rx_framed >= w->rx_total) w->frame_since = 0;
    else if (w->frame_since == 0) w->frame_since = ae_clock_mono();
    if (r != 0) {
      if (!w->eof) ws_fail(w, "protocol", "websocket receive failed (wslay %d)", r);
      if (w->state == WS_OPEN) finish_io(w);
      return;
    }
  }
  if (w->state != WS_OPEN) return; /* out of memory in cb_msg */
  if (wslay_event_want_write(w->ctx)) {
    r = wslay_event_send(w->ctx);
    if (r != 0) {
      if (wslay_event_get_close_received(w->ctx)) { /* the peer left after its close: fine */
        w->err_kind = NULL;
        w->state = WS_ENDED;
        return;
      }
      ws_fail(w, "send", "websocket send failed (wslay %d)", r);
      return;
    }
    free_frags(w, 1);
  }
  if (!wslay_event_want_read(w->ctx) && !wslay_event_want_write(w->ctx)) finish_io(w);
}

void ws_step(ae_ws *w) {
  if (w->state == WS_CONNECTING || w->state == WS_HS_SEND || w->state == WS_HS_RECV)
    ws_client_step(w);
  if (w->state == WS_OPEN) step_io(w);
}

/* ---- waiting ------------------------------------------------------------------ */

/* The socket and events the handle waits for now: 1 with fd and events set,
 * 0 when it waits on nothing it can name (connecting with no socket yet:
 * the caller should wait a short while only), -1 when it cannot progress. */
int ae_ws_waitfd(ae_ws *w, int *fd, short *events) {
  switch (w->state) {
  case WS_CONNECTING: {
    fd_set r, wr, ex;
    int maxfd = -1, i;
    FD_ZERO(&r);
    FD_ZERO(&wr);
    FD_ZERO(&ex);
    if (curl_multi_fdset(w->multi, &r, &wr, &ex, &maxfd) != CURLM_OK || maxfd < 0) return 0;
    for (i = 0; i <= maxfd; i++) {
      short ev = (short)((FD_ISSET(i, &r) ? POLLIN : 0) | (FD_ISSET(i, &wr) ? POLLOUT : 0));
      if (ev) {
        *fd = i;
        *events = ev;
        return 1;
      }
    }
    return 0;
  }
  case WS_HS_SEND: *fd = w->fd, *events = POLLOUT; return 1;
  case WS_HS_RECV: *fd = w->fd, *events = POLLIN; return 1;
  case WS_UPGRADING: return 0;
  case WS_OPEN:
    if (w->in_off < w->in.len || w->head) return 0; /* already has something to do */
    *fd = w->fd;
    if (w->discard) {
      *events = POLLIN;
      return 1;
    }
    *events = (short)((wslay_event_want_read(w->ctx) ? POLLIN : 0) |
                      (wslay_event_want_write(w->ctx) ? POLLOUT : 0));
    return 1;
  default: return -1;
  }
}

/* Wait up to `deadline` for the handle's socket. */
static void ws_wait(ae_ws *w, double deadline) {
  int ms = ae_clock_ms_until(deadline), fd, r;
  short ev;
  struct pollfd p;
  if (ms == 0) return;
  if (w->state == WS_CONNECTING) {
    curl_multi_poll(w->multi, NULL, 0, ms, NULL);
    return;
  }
  r = ae_ws_waitfd(w, &fd, &ev);
  if (r != 1) return;
  p.fd = fd;
  p.events = ev;
  p.revents = 0;
  poll(&p, 1, ms);
}

/* Step and wait until done(w) holds, the handle cannot progress, or the
 * deadline passes. Returns 1 when done(w) holds. */
int ws_run(ae_ws *w, double deadline, int (*done)(ae_ws *)) {
  for (;;) {
    ws_step(w);
    if (done(w)) return 1;
    if (w->state == WS_FAILED || w->state == WS_ENDED || w->state == WS_CLOSED) return 0;
    if (ae_clock_mono() >= deadline) return 0;
    ws_wait(w, deadline);
  }
}

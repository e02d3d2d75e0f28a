/* The server side of a WebSocket, made by server_ws.c for a connection
 * libmicrohttpd upgraded: plain recv/send on the socket MHD hands over,
 * framing by ws_frame.c. The owner (server_ws.c) closes the socket through the
 * release callback. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ws_frame.h"

ae_ws *ae_ws_new_server(lua_State *L, int opts) {
  uint64_t max_msg = (uint64_t)DEFAULT_MAX_MESSAGE;
  int control = 0;
  ae_ws *w;
  if (opts) {
    max_msg = ws_opt_max_msg(L, opts);
    control = ae_optboolfield(L, opts, "control_frames", 0);
  }
  w = ws_new_handle(L, max_msg, control);
  w->is_server = 1;
  /* The framer exists now, so messages can be queued before the upgrade. */
  if (ws_make_ctx(w) != 0) luaL_error(L, "websocket: out of memory");
  w->state = WS_UPGRADING;
  return w;
}

void ae_ws_set_owner(ae_ws *w, void *owner, ae_ws_release_fn fn) {
  w->owner = owner;
  w->release = fn;
}

void ae_ws_upgraded(ae_ws *w, int fd, const char *extra, size_t n, void *urh) {
  int fl;
  w->urh = urh;
  w->fd = fd;
  if (w->state != WS_UPGRADING) return; /* closed meanwhile: the owner closes urh */
  fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  if (n > 0) {
    if (ae_buf_add(&w->in, extra, n) != 0) {
      ws_fail(w, "other", "websocket: out of memory");
      return;
    }
  }
  w->state = WS_OPEN;
  w->last_frame = ae_clock_mono();
}

void ae_ws_set_frame_timeout(ae_ws *w, double t) {
  w->frame_timeout = t;
}

double ae_ws_frame_deadline(const ae_ws *w) {
  /* not while dropping after our close: that phase has its own bound */
  if (w->state != WS_OPEN || w->discard || w->frame_timeout <= 0 || w->frame_since <= 0) return 0;
  return w->frame_since + w->frame_timeout;
}

double ae_ws_idle_since(const ae_ws *w) {
  if (w->state != WS_OPEN || w->discard || w->frame_since > 0) return -1;
  return w->last_frame;
}

void ae_ws_close_for(ae_ws *w, int code, const char *kind, const char *msg) {
  if (w->state != WS_OPEN) return;
  /* best effort: the peer may not read, and nothing here may block */
  if (wslay_event_queue_close(w->ctx, (uint16_t)code, (const uint8_t *)msg, strlen(msg)) == 0)
    (void)wslay_event_send(w->ctx);
  ws_fail(w, kind, "websocket: %s; closed with %d", msg, code);
}

void ae_ws_fail_upgrade(ae_ws *w, const char *why) {
  if (w->state == WS_UPGRADING) ws_fail(w, "closed", "websocket: %s", why);
}

/* Non-blocking progress for the server's poll: 1 when Lua has news (a
 * message, or the connection ended or failed since the last call). */
int ae_ws_pump(ae_ws *w) {
  int before = w->state;
  size_t n = w->nmsg;
  double dl;
  if (w->state != WS_OPEN) return 0;
  ws_step(w);
  dl = ae_ws_frame_deadline(w);
  if (dl > 0 && ae_clock_mono() >= dl) {
    char why[96];
    snprintf(why, sizeof why, "a frame was not complete within %g s", w->frame_timeout);
    ae_ws_close_for(w, 1008, "stalled", why);
  }
  return w->nmsg > n || w->state != before;
}

/* The owner goes away (server closing): forget it, the socket is its. */
void ae_ws_orphan(ae_ws *w) {
  w->release = NULL;
  w->owner = w->urh = NULL;
  if (w->ctx) wslay_event_context_free(w->ctx);
  w->ctx = NULL;
  if (w->state != WS_CLOSED && w->state != WS_ENDED) {
    w->state = WS_OPEN; /* so ws_fail records the reason */
    ws_fail(w, "closed", "websocket: the server closed");
  }
  w->fd = -1;
}

int ae_ws_is_ws(lua_State *L, int idx, ae_ws **out) {
  *out = luaL_testudata(L, idx, WS_MT);
  return *out != NULL;
}

/* ---- one wait for many: core.wait_fds -------------------------------------------- */

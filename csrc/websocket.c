/* analytics_engine.core WebSocket: client on libcurl CONNECT_ONLY, framing by wslay.
 *
 * One handle type serves both ends. A client handle owns a private CURLM with
 * one CONNECT_ONLY easy handle (libcurl does DNS, TCP, proxy CONNECT and TLS,
 * without blocking); the Upgrade handshake is ours (Sec-WebSocket-Key from
 * getrandom, Sec-WebSocket-Accept checked with SHA-1 + base64), and then
 * curl_easy_send/recv carry the frames. A server handle is made by server.c
 * for an upgraded libmicrohttpd connection and does plain recv/send on the
 * socket MHD hands over. wslay's event API does framing, masking,
 * fragmentation, ping/pong replies, close handshake and the size limit.
 *
 * Every operation is a non-blocking step plus an optional wait on the
 * socket, so a timeout of 0 never blocks (the scheduler waits on ws:fd()
 * together with everything else) and a timeout > 0 blocks up to then. No
 * wslay or libcurl callback touches Lua: failures are stashed in the handle
 * and reported after the library call has returned. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <wslay/wslay.h>

#include "core.h"
#include "websocket.h"

#define WS_MT "analytics_engine.WebSocket"
#define DEFAULT_MAX_MESSAGE (16.0 * 1024 * 1024)
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define MAX_HANDSHAKE 16384 /* bytes of the server's 101 response head */
#define LIMIT_SECONDS 1e8
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

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
static const char *const STATE_NAMES[] = {"closed",     "connecting", "connecting", "connecting",
                                          "connecting", "open",       "ended",      "failed"};

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
   * peer closes, so our close frame is not lost to a TCP reset */
  int discard;
  const char *discard_kind;
  char discard_msg[160];
  int fd;
  CURLM *multi;
  CURL *easy;
  wslay_event_context_ptr ctx;
  char *out; /* handshake request */
  size_t out_len, out_off;
  char *in; /* handshake response, then bytes that came after it */
  size_t in_len, in_cap, in_off;
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
  /* server side: the owner (server.c) releases the MHD upgrade handle */
  void *owner, *urh;
  ae_ws_release_fn release;
  char errbuf[CURL_ERROR_SIZE];
};

/* ---- SHA-1 and base64 (for Sec-WebSocket-Accept) ------------------------- */

typedef struct {
  uint32_t h[5];
  uint64_t len;
  unsigned char buf[64];
  size_t n;
} sha1_ctx;

#define ROL(x, k) (((x) << (k)) | ((x) >> (32 - (k))))

static void sha1_block(sha1_ctx *c, const unsigned char *p) {
  uint32_t w[80], a, b, d, e, f, k, t, cc;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4];
  for (i = 0; i < 80; i++) {
    if (i < 20) f = (b & cc) | (~b & d), k = 0x5A827999;
    else if (i < 40) f = b ^ cc ^ d, k = 0x6ED9EBA1;
    else if (i < 60) f = (b & cc) | (b & d) | (cc & d), k = 0x8F1BBCDC;
    else f = b ^ cc ^ d, k = 0xCA62C1D6;
    t = ROL(a, 5) + f + e + k + w[i];
    e = d, d = cc, cc = ROL(b, 30), b = a, a = t;
  }
  c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e;
}

static void sha1_init(sha1_ctx *c) {
  static const uint32_t h0[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  memcpy(c->h, h0, sizeof h0);
  c->len = 0;
  c->n = 0;
}

static void sha1_update(sha1_ctx *c, const void *data, size_t len) {
  const unsigned char *p = data;
  c->len += len;
  while (len > 0) {
    size_t k = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, k);
    c->n += k, p += k, len -= k;
    if (c->n == 64) sha1_block(c, c->buf), c->n = 0;
  }
}

static void sha1_final(sha1_ctx *c, unsigned char out[20]) {
  uint64_t bits = c->len * 8;
  unsigned char pad = 0x80, z = 0, lenb[8];
  int i;
  sha1_update(c, &pad, 1);
  while (c->n != 56) sha1_update(c, &z, 1);
  for (i = 0; i < 8; i++) lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
  sha1_update(c, lenb, 8);
  for (i = 0; i < 20; i++) out[i] = (unsigned char)(c->h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const unsigned char *in, size_t n, char *out) {
  static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i;
  for (i = 0; i + 2 < n; i += 3) {
    *out++ = T[in[i] >> 2];
    *out++ = T[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    *out++ = T[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
    *out++ = T[in[i + 2] & 63];
  }
  if (n - i == 1) {
    *out++ = T[in[i] >> 2];
    *out++ = T[(in[i] & 3) << 4];
    *out++ = '=';
    *out++ = '=';
  } else if (n - i == 2) {
    *out++ = T[in[i] >> 2];
    *out++ = T[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    *out++ = T[(in[i + 1] & 15) << 2];
    *out++ = '=';
  }
  *out = '\0';
}

void ae_ws_accept_key(const char *key, size_t klen, char out[29]) {
  sha1_ctx c;
  unsigned char d[20];
  sha1_init(&c);
  sha1_update(&c, key, klen);
  sha1_update(&c, WS_GUID, sizeof WS_GUID - 1);
  sha1_final(&c, d);
  base64(d, 20, out);
}

static int fill_random(void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n, len -= (size_t)n;
  }
  return 0;
}

/* ---- errors ---------------------------------------------------------------- */

static void ws_fail(ae_ws *w, const char *kind, const char *fmt, ...) {
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

static const char *curl_kind(CURLcode rc) {
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_COULDNT_CONNECT: return "connect";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return "resolve";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_USE_SSL_FAILED: return "tls";
  case CURLE_SEND_ERROR: return "send";
  case CURLE_RECV_ERROR: return "recv";
  default: return "other";
  }
}

static void fail_curl(ae_ws *w, const char *what, CURLcode rc) {
  size_t n = strlen(w->errbuf);
  while (n > 0 && (w->errbuf[n - 1] == '\n' || w->errbuf[n - 1] == '\r')) w->errbuf[--n] = '\0';
  if (n > 0) ws_fail(w, curl_kind(rc), "%s: %s: %s", what, curl_easy_strerror(rc), w->errbuf);
  else ws_fail(w, curl_kind(rc), "%s: %s", what, curl_easy_strerror(rc));
}

/* ---- raw I/O: > 0 bytes, 0 end of stream, -1 would block, -2 failed --------- */

static ssize_t io_recv(ae_ws *w, void *buf, size_t len) {
  if (w->easy) {
    size_t n = 0;
    CURLcode rc = curl_easy_recv(w->easy, buf, len, &n);
    if (rc == CURLE_AGAIN) return -1;
    if (rc != CURLE_OK) {
      fail_curl(w, "websocket receive", rc);
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

static ssize_t io_send(ae_ws *w, const void *buf, size_t len) {
  if (w->easy) {
    size_t n = 0;
    CURLcode rc = curl_easy_send(w->easy, buf, len, &n);
    if (rc == CURLE_AGAIN) return -1;
    if (rc != CURLE_OK) {
      fail_curl(w, "websocket send", rc);
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
  if (w->in_off < w->in_len) { /* bytes that arrived with the handshake */
    size_t k = w->in_len - w->in_off < len ? w->in_len - w->in_off : len;
    memcpy(buf, w->in + w->in_off, k);
    w->in_off += k;
    return (ssize_t)k;
  }
  n = io_recv(w, buf, len);
  if (n > 0) return n;
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
  ssize_t n = io_send(w, data, len);
  (void)flags;
  if (n >= 0) return n;
  wslay_event_set_error(ctx, n == -1 ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

static int cb_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
  (void)ud;
  if (fill_random(buf, len) == 0) return 0;
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

/* ---- lifecycle ------------------------------------------------------------- */

static int make_ctx(ae_ws *w) {
  struct wslay_event_callbacks cbs = {cb_recv, cb_send, cb_genmask, NULL, NULL, NULL, cb_msg};
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
static void ws_release(lua_State *L, ae_ws *w) {
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
  free(w->out);
  free(w->in);
  free(w->err_body);
  w->out = w->in = w->err_body = NULL;
  w->out_len = w->out_off = w->in_len = w->in_cap = w->in_off = 0;
  if (w->release) { /* server side: MHD closes the socket */
    ae_ws_release_fn fn = w->release;
    w->release = NULL;
    fn(L, w->owner, w, w->urh);
  }
  w->owner = w->urh = NULL;
  w->fd = -1;
  w->state = WS_CLOSED;
}

/* ---- steps (non-blocking) --------------------------------------------------- */

static void step_connect(ae_ws *w) {
  int running, left;
  CURLMsg *m;
  CURLMcode mc = curl_multi_perform(w->multi, &running);
  if (mc != CURLM_OK) {
    ws_fail(w, "other", "websocket connect: %s", curl_multi_strerror(mc));
    return;
  }
  while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
    curl_socket_t s = CURL_SOCKET_BAD;
    CURLcode rc;
    if (m->msg != CURLMSG_DONE) continue;
    rc = m->data.result;
    if (rc != CURLE_OK) {
      fail_curl(w, "websocket connect", rc);
      return;
    }
    if (curl_easy_getinfo(w->easy, CURLINFO_ACTIVESOCKET, &s) != CURLE_OK || s == CURL_SOCKET_BAD) {
      ws_fail(w, "connect", "websocket connect: no socket after connecting");
      return;
    }
    w->fd = (int)s;
    w->state = WS_HS_SEND;
  }
}

static void step_hs_send(ae_ws *w) {
  while (w->out_off < w->out_len) {
    ssize_t n = io_send(w, w->out + w->out_off, w->out_len - w->out_off);
    if (n < 0) return; /* would block, or failed */
    w->out_off += (size_t)n;
  }
  w->state = WS_HS_RECV;
}

/* Value of header `name` in the head [p, e), or NULL; *len gets its length. */
static const char *find_header(const char *p, const char *e, const char *name, size_t *len) {
  size_t nl = strlen(name);
  while (p < e) {
    const char *eol = memchr(p, '\n', (size_t)(e - p)), *v, *ve;
    if (!eol) eol = e;
    if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
      v = p + nl + 1;
      ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      *len = (size_t)(ve - v);
      return v;
    }
    p = eol + 1;
  }
  return NULL;
}

static int has_token(const char *v, size_t len, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < len) {
    size_t j;
    while (i < len && (v[i] == ' ' || v[i] == ',' || v[i] == '\t')) i++;
    j = i;
    while (j < len && v[j] != ',') j++;
    {
      size_t k = j;
      while (k > i && (v[k - 1] == ' ' || v[k - 1] == '\t')) k--;
      if (k - i == tl && strncasecmp(v + i, tok, tl) == 0) return 1;
    }
    i = j;
  }
  return 0;
}

static void check_response(ae_ws *w, char *head, size_t hlen) {
  const char *e = head + hlen, *v, *sp;
  size_t vl;
  long status;
  char *end;
  if (hlen < 12 || strncmp(head, "HTTP/1.", 7) != 0 || !(sp = memchr(head, ' ', hlen))) {
    ws_fail(w, "handshake", "websocket handshake: the server's answer is not HTTP/1.x");
    return;
  }
  status = strtol(sp + 1, &end, 10);
  if (status != 101) {
    size_t n = w->in_len - w->in_off;
    w->err_status = status;
    if (n > 4096) n = 4096;
    if (n > 0 && (w->err_body = malloc(n)) != NULL) {
      memcpy(w->err_body, w->in + w->in_off, n);
      w->err_body_len = n;
    }
    ws_fail(w, "handshake", "websocket handshake: the server answered %ld instead of 101", status);
    return;
  }
  v = find_header(head, e, "upgrade", &vl);
  if (!v || !has_token(v, vl, "websocket")) {
    ws_fail(w, "handshake", "websocket handshake: 101 without 'Upgrade: websocket'");
    return;
  }
  v = find_header(head, e, "connection", &vl);
  if (!v || !has_token(v, vl, "upgrade")) {
    ws_fail(w, "handshake", "websocket handshake: 101 without 'Connection: Upgrade'");
    return;
  }
  v = find_header(head, e, "sec-websocket-accept", &vl);
  if (!v || vl != strlen(w->accept) || memcmp(v, w->accept, vl) != 0) {
    ws_fail(w, "handshake", "websocket handshake: Sec-WebSocket-Accept %s",
            v ? "does not match the key sent" : "is missing");
    return;
  }
  if (find_header(head, e, "sec-websocket-extensions", &vl) && vl > 0) {
    ws_fail(w, "handshake",
            "websocket handshake: the server chose an extension that was not offered");
    return;
  }
  if (make_ctx(w) != 0) {
    ws_fail(w, "other", "websocket: out of memory");
    return;
  }
  w->state = WS_OPEN;
  w->hs_done = 1;
}

static void step_hs_recv(ae_ws *w) {
  for (;;) {
    char *end;
    ssize_t n;
    if (w->in_cap - w->in_len < 1024) {
      size_t cap = w->in_cap ? w->in_cap * 2 : 2048;
      char *p = realloc(w->in, cap);
      if (!p) {
        ws_fail(w, "other", "websocket handshake: out of memory");
        return;
      }
      w->in = p;
      w->in_cap = cap;
    }
    n = io_recv(w, w->in + w->in_len, w->in_cap - w->in_len - 1);
    if (n == -1 || n == -2) return;
    if (n == 0) {
      ws_fail(w, "handshake", "websocket handshake: the server closed the connection");
      return;
    }
    w->in_len += (size_t)n;
    w->in[w->in_len] = '\0';
    end = strstr(w->in, "\r\n\r\n");
    if (end) {
      size_t hlen = (size_t)(end - w->in) + 4;
      w->in_off = hlen; /* what follows is the first frames (or an error body) */
      check_response(w, w->in, hlen);
      return;
    }
    if (w->in_len > MAX_HANDSHAKE) {
      ws_fail(w, "handshake", "websocket handshake: response head exceeds %d bytes", MAX_HANDSHAKE);
      return;
    }
  }
}

/* The connection ended: say why, from wslay's view of the close handshake. */
static void finish_io(ae_ws *w) {
  uint16_t sent = wslay_event_get_status_code_sent(w->ctx);
  if (w->is_server && !w->eof && !wslay_event_get_close_received(w->ctx) &&
      (sent == WSLAY_CODE_MESSAGE_TOO_BIG || sent == WSLAY_CODE_PROTOCOL_ERROR ||
       sent == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA)) {
    w->discard = 1;
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
    for (;;) {
      ssize_t n = io_recv(w, buf, sizeof buf);
      if (n > 0) continue;
      if (n == -1) return;
      w->discard = 0;
      w->err_kind = NULL;
      ws_fail(w, w->discard_kind, "%s", w->discard_msg);
      return;
    }
  }
  if (wslay_event_want_read(w->ctx)) {
    r = wslay_event_recv(w->ctx);
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

static void ws_step(ae_ws *w) {
  if (w->state == WS_CONNECTING) step_connect(w);
  if (w->state == WS_HS_SEND) step_hs_send(w);
  if (w->state == WS_HS_RECV) step_hs_recv(w);
  if (w->state == WS_OPEN) step_io(w);
}

/* ---- waiting ------------------------------------------------------------------ */

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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
    if (w->in_off < w->in_len || w->head) return 0; /* already has something to do */
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
  double left = deadline - now_mono();
  int ms, fd, r;
  short ev;
  struct pollfd p;
  if (left <= 0) return;
  ms = left * 1000 + 1 > INT_MAX ? INT_MAX : (int)(left * 1000 + 1);
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
static int ws_run(ae_ws *w, double deadline, int (*done)(ae_ws *)) {
  for (;;) {
    ws_step(w);
    if (done(w)) return 1;
    if (w->state == WS_FAILED || w->state == WS_ENDED || w->state == WS_CLOSED) return 0;
    if (now_mono() >= deadline) return 0;
    ws_wait(w, deadline);
  }
}

static int is_open(ae_ws *w) {
  return w->state == WS_OPEN;
}
static int has_msg(ae_ws *w) {
  return w->head != NULL;
}
static int flushed(ae_ws *w) {
  return w->state == WS_OPEN && !wslay_event_want_write(w->ctx);
}

/* ---- results --------------------------------------------------------------------- */

static void push_err(lua_State *L, ae_ws *w) {
  lua_createtable(L, 0, 5);
  if (w->state == WS_CLOSED) {
    ae_setstr(L, "kind", "closed");
    ae_setstr(L, "message", "websocket: closed");
    return;
  }
  if (w->state == WS_ENDED) {
    /* the peer's reason is UTF-8 it chose: keep the message on one line */
    char reason[sizeof w->close_reason];
    size_t i;
    for (i = 0; i + 1 < sizeof reason && w->close_reason[i]; i++) {
      unsigned char c = (unsigned char)w->close_reason[i];
      reason[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    reason[i] = '\0';
    ae_setstr(L, "kind", "closed");
    lua_pushfstring(L, "websocket: closed by %s with code %d%s%s",
                    w->shutdown_called ? "us" : "the peer", w->close_code, reason[0] ? ": " : "",
                    reason);
    lua_setfield(L, -2, "message");
  } else {
    ae_setstr(L, "kind", w->err_kind ? w->err_kind : "other");
    ae_setstr(L, "message", w->err_msg);
  }
  if (w->close_code) {
    ae_setint(L, "code", w->close_code);
    ae_setstr(L, "reason", w->close_reason);
  }
  if (w->err_status) ae_setint(L, "status", w->err_status);
  if (w->err_body) {
    lua_pushlstring(L, w->err_body, w->err_body_len);
    lua_setfield(L, -2, "body");
  }
}

static int fail_result(lua_State *L, ae_ws *w) {
  luaL_pushfail(L);
  push_err(L, w);
  return 2;
}

static int timeout_result(lua_State *L, const char *what) {
  luaL_pushfail(L);
  lua_createtable(L, 0, 2);
  ae_setstr(L, "kind", "timeout");
  lua_pushfstring(L, "websocket: timed out %s", what);
  lua_setfield(L, -2, "message");
  return 2;
}

static const char *opcode_name(int op) {
  switch (op) {
  case WSLAY_TEXT_FRAME: return "text";
  case WSLAY_BINARY_FRAME: return "binary";
  case WSLAY_PING: return "ping";
  case WSLAY_PONG: return "pong";
  default: return "other";
  }
}

/* ---- methods ---------------------------------------------------------------------- */

static ae_ws *check_ws(lua_State *L) {
  return (ae_ws *)luaL_checkudata(L, 1, WS_MT);
}

static double opt_deadline(lua_State *L, int idx) {
  lua_Number t;
  if (lua_isnoneornil(L, idx)) return now_mono() + LIMIT_SECONDS;
  t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0, idx, "timeout must be a non-negative number");
  return now_mono() + (t > LIMIT_SECONDS ? LIMIT_SECONDS : t);
}

/* ws:connect([timeout]) -> true | nil, err (kind "timeout" when not yet open) */
static int w_connect(lua_State *L) {
  ae_ws *w = check_ws(L);
  double deadline = opt_deadline(L, 2);
  if (w->state == WS_OPEN) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_UPGRADING) return timeout_result(L, "waiting for the upgrade (server:poll)");
  if (w->state != WS_CONNECTING && w->state != WS_HS_SEND && w->state != WS_HS_RECV &&
      w->state != WS_UPGRADING)
    return fail_result(L, w);
  if (ws_run(w, deadline, is_open)) return lua_pushboolean(L, 1), 1;
  /* Frames that came with the 101 may already have ended the connection:
   * the connect itself succeeded, and receive() hands out what they held
   * before it reports the end (found by fuzz/fuzz_ws_client). */
  if (w->hs_done && w->state != WS_CLOSED) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_FAILED || w->state == WS_CLOSED || w->state == WS_ENDED)
    return fail_result(L, w);
  return timeout_result(L, "connecting");
}

/* ws:send(data [, {binary=, fragment_size=}]) -> true | nil, err */
static int w_send(lua_State *L) {
  ae_ws *w = check_ws(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int binary = 0, r;
  lua_Number step = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    binary = ae_optboolfield(L, 3, "binary", 0);
    step = ae_optnumfield(L, 3, "fragment_size", 0);
    luaL_argcheck(L, step >= 0, 3, "fragment_size must be a non-negative number");
  }
  if (w->state != WS_OPEN && w->state != WS_UPGRADING) return fail_result(L, w);
  if (w->shutdown_called) {
    luaL_pushfail(L);
    lua_createtable(L, 0, 2);
    ae_setstr(L, "kind", "closed");
    ae_setstr(L, "message", "websocket: send after shutdown");
    return 2;
  }
  if (step > 0 && (size_t)step < len) {
    struct wslay_event_fragmented_msg fm;
    frag *f = calloc(1, sizeof *f);
    if (f) f->data = malloc(len);
    if (!f || !f->data) {
      free(f);
      return luaL_error(L, "websocket: out of memory");
    }
    memcpy(f->data, data, len);
    f->len = len;
    f->step = (size_t)step;
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
  if (r == WSLAY_ERR_NOMEM) return luaL_error(L, "websocket: out of memory");
  if (r != 0) {
    luaL_pushfail(L);
    lua_createtable(L, 0, 2);
    ae_setstr(L, "kind", "closed");
    ae_setstr(L, "message", "websocket: cannot send now (closing)");
    return 2;
  }
  ws_step(w);
  if (w->state == WS_FAILED) return fail_result(L, w);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:ping([data]) -> true | nil, err */
static int w_ping(lua_State *L) {
  ae_ws *w = check_ws(L);
  size_t len;
  const char *data = luaL_optlstring(L, 2, "", &len);
  struct wslay_event_msg m;
  luaL_argcheck(L, len <= 125, 2, "a ping carries at most 125 bytes");
  if (w->state != WS_OPEN && w->state != WS_UPGRADING) return fail_result(L, w);
  m.opcode = WSLAY_PING;
  m.msg = (const uint8_t *)data;
  m.msg_length = len;
  if (wslay_event_queue_msg(w->ctx, &m) != 0) return timeout_result(L, "queueing a ping");
  ws_step(w);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:flush([timeout]) -> true | nil, err: wait until everything queued is written */
static int w_flush(lua_State *L) {
  ae_ws *w = check_ws(L);
  double deadline = opt_deadline(L, 2);
  if (w->state == WS_ENDED) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_UPGRADING) return timeout_result(L, "waiting for the upgrade (server:poll)");
  if (w->state != WS_OPEN) return fail_result(L, w);
  if (ws_run(w, deadline, flushed)) return lua_pushboolean(L, 1), 1;
  if (w->state == WS_ENDED) return lua_pushboolean(L, 1), 1;
  if (w->state != WS_OPEN) return fail_result(L, w);
  return timeout_result(L, "sending");
}

/* ws:receive([timeout]) -> data, opcode | nil, err */
static int w_receive(lua_State *L) {
  ae_ws *w = check_ws(L);
  double deadline = opt_deadline(L, 2);
  wsmsg *m;
  if (!w->head && w->state == WS_OPEN) ws_run(w, deadline, has_msg);
  m = w->head;
  if (!m) {
    if (w->state == WS_OPEN || w->state == WS_UPGRADING) return timeout_result(L, "receiving");
    return fail_result(L, w);
  }
  w->head = m->next;
  if (!w->head) w->tail = NULL;
  w->nmsg--;
  lua_pushlstring(L, m->data, m->len);
  lua_pushstring(L, opcode_name(m->opcode));
  free(m);
  return 2;
}

/* ws:shutdown([code [, reason]]) -> true | nil, err: start the close handshake */
static int w_shutdown(lua_State *L) {
  ae_ws *w = check_ws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t rl;
  const char *reason = luaL_optlstring(L, 3, "", &rl);
  luaL_argcheck(L,
                code == 0 || (code >= 1000 && code <= 4999 && code != 1004 && code != 1005 &&
                              code != 1006 && code != 1015),
                2, "close code must be 0 (none) or a valid code in 1000..4999");
  luaL_argcheck(L, rl <= 123, 3, "a close reason has at most 123 bytes");
  if (w->state != WS_OPEN && w->state != WS_UPGRADING) {
    if (w->state == WS_ENDED) return lua_pushboolean(L, 1), 1;
    return fail_result(L, w);
  }
  if (!w->shutdown_called) {
    w->shutdown_called = 1;
    wslay_event_queue_close(w->ctx, (uint16_t)code, (const uint8_t *)reason, rl);
    ws_step(w);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int ended(ae_ws *w) {
  return w->state != WS_OPEN;
}

/* ws:close([code [, reason [, timeout]]]) -> true: close handshake (if still
 * open, up to timeout, default 1 s), then release. Safe to call again. */
static int w_close(lua_State *L) {
  ae_ws *w = check_ws(L);
  if (w->state == WS_OPEN) {
    double deadline;
    lua_settop(L, 4);
    deadline = lua_isnil(L, 4) ? now_mono() + 1.0 : opt_deadline(L, 4);
    lua_pop(L, 1);
    w_shutdown(L);
    ws_run(w, deadline, ended);
  }
  ws_release(L, w);
  lua_pushboolean(L, 1);
  return 1;
}

static int w_gc(lua_State *L) {
  ws_release(L, check_ws(L));
  return 0;
}

/* ws:fd() -> fd, "r"|"w"|"rw" | nil: what the handle waits for now (nil:
 * nothing to wait on; step again soon) */
static int w_fd(lua_State *L) {
  ae_ws *w = check_ws(L);
  int fd;
  short ev;
  if (ae_ws_waitfd(w, &fd, &ev) != 1) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, fd);
  lua_pushstring(L, (ev & POLLIN) && (ev & POLLOUT) ? "rw" : (ev & POLLOUT) ? "w" : "r");
  return 2;
}

static int w_state(lua_State *L) {
  ae_ws *w = check_ws(L);
  lua_pushstring(L, STATE_NAMES[w->state]);
  return 1;
}

/* ws:close_info() -> code received (or nil), reason, code sent (or nil) */
static int w_close_info(lua_State *L) {
  ae_ws *w = check_ws(L);
  uint16_t sent = w->ctx ? wslay_event_get_status_code_sent(w->ctx) : 0;
  if (w->close_code) lua_pushinteger(L, w->close_code);
  else lua_pushnil(L);
  lua_pushstring(L, w->close_reason);
  if (sent) lua_pushinteger(L, sent);
  else lua_pushnil(L);
  return 3;
}

static int w_tostring(lua_State *L) {
  ae_ws *w = check_ws(L);
  lua_pushfstring(L, WS_MT " (%s, %s)", w->is_server ? "server" : "client", STATE_NAMES[w->state]);
  return 1;
}

/* ---- constructors ---------------------------------------------------------------- */

static ae_ws *new_handle(lua_State *L, uint64_t max_msg, int control) {
  ae_ws *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w); /* closed until its resources exist */
  w->fd = -1;
  w->max_msg = max_msg;
  w->control = control;
  luaL_getmetatable(L, WS_MT);
  lua_setmetatable(L, -2);
  return w;
}

static int has_ctl(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

static uint64_t opt_max_msg(lua_State *L, int idx) {
  lua_Number m = ae_optnumfield(L, idx, "max_message_size", DEFAULT_MAX_MESSAGE);
  if (!(m >= 1 && m <= 2147483647.0))
    luaL_error(L, "field 'max_message_size' must be a number in 1..2147483647");
  return (uint64_t)m;
}

/* Request head, left on the stack; raises only before any C resource exists. */
static void build_request(lua_State *L, int opts, const char *path, const char *hostport,
                          const char *key) {
  luaL_Buffer b;
  int parts, n = 0, t, i;
  lua_newtable(L);
  parts = lua_gettop(L);
  lua_pushfstring(L,
                  "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                  path, hostport, key);
  lua_rawseti(L, parts, ++n);
  lua_getfield(L, opts, "headers");
  t = lua_gettop(L);
  if (!lua_isnil(L, t)) {
    if (!lua_istable(L, t)) luaL_error(L, "field 'headers' must be a table");
    lua_pushnil(L);
    while (lua_next(L, t)) {
      size_t kl, vl;
      const char *k, *v;
      if (lua_type(L, -2) != LUA_TSTRING ||
          (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
        luaL_error(L, "field 'headers' must map header names to strings");
      k = lua_tolstring(L, -2, &kl);
      lua_pushvalue(L, -1); /* convert a copy, never the key */
      v = lua_tolstring(L, -1, &vl);
      if (kl == 0 || has_ctl(k, kl) || memchr(k, ':', kl) || memchr(k, ' ', kl) || has_ctl(v, vl))
        luaL_error(L, "field 'headers' has an invalid header '%s'", k);
      lua_pushfstring(L, "%s: %s\r\n", k, v);
      lua_rawseti(L, parts, ++n);
      lua_pop(L, 2); /* the copy and the value; the key stays for lua_next */
    }
  }
  lua_pop(L, 1);
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, parts, i);
    luaL_addvalue(&b);
  }
  luaL_addstring(&b, "\r\n");
  luaL_pushresult(&b);
  lua_remove(L, parts);
}

static void setup_fail(lua_State *L, ae_ws *w, const char *msg) {
  ws_release(L, w);
  lua_pop(L, 1);
  luaL_pushfail(L);
  lua_createtable(L, 0, 2);
  ae_setstr(L, "kind", "other");
  ae_setstr(L, "message", msg);
}

/* core.ws_connect(url, opts?) -> ws (connecting; drive with ws:connect) | nil, err */
static int l_ws_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  const char *scheme_end, *rest, *cafile = NULL, *capath = NULL, *proxy = NULL;
  char *host = NULL, *port = NULL, *path = NULL, *query = NULL, *base_url = NULL;
  CURLU *u;
  int tls, insecure = 0, control = 0;
  uint64_t max_msg = (uint64_t)DEFAULT_MAX_MESSAGE;
  lua_Number connect_timeout = DEFAULT_CONNECT_TIMEOUT;
  unsigned char raw[16];
  char key[25], accept[29];
  const char *head;
  size_t head_len;
  ae_ws *w;
  CURLcode rc = CURLE_OK;

  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_newtable(L);
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (strncasecmp(url, "ws://", 5) == 0 || strncasecmp(url, "http://", 7) == 0) tls = 0;
  else if (strncasecmp(url, "wss://", 6) == 0 || strncasecmp(url, "https://", 8) == 0) tls = 1;
  else return luaL_argerror(L, 1, "URL must start with ws://, wss://, http:// or https://");
  scheme_end = strstr(url, "://");
  rest = scheme_end + 3;
  if (has_ctl(url, strlen(url)) || strchr(url, ' '))
    return luaL_argerror(L, 1, "URL has spaces or controls");
  cafile = ae_optstrfield(L, 2, "cafile", NULL);
  capath = ae_optstrfield(L, 2, "capath", NULL);
  proxy = ae_optstrfield(L, 2, "proxy", NULL);
  insecure = ae_optboolfield(L, 2, "insecure", 0);
  control = ae_optboolfield(L, 2, "control_frames", 0);
  connect_timeout = ae_optnumfield(L, 2, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
  luaL_argcheck(L, connect_timeout >= 0, 2, "connect_timeout must be >= 0");
  max_msg = opt_max_msg(L, 2);

  /* Parse with libcurl's URL API, as http(s), so ws schemes need no support. */
  lua_pushfstring(L, "%s://%s", tls ? "https" : "http", rest);
  u = curl_url();
  if (!u) return luaL_error(L, "websocket: out of memory");
  if (curl_url_set(u, CURLUPART_URL, lua_tostring(L, -1), 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
    curl_free(host);
    curl_free(path);
    curl_url_cleanup(u);
    return luaL_argerror(L, 1, "not a valid URL");
  }
  curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent: default port */
  curl_url_get(u, CURLUPART_QUERY, &query, 0);
  curl_url_set(u, CURLUPART_PATH, "/", 0);
  curl_url_set(u, CURLUPART_QUERY, NULL, 0);
  curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
  curl_url_get(u, CURLUPART_URL, &base_url, 0);
  curl_url_cleanup(u);
  /* Copy everything to Lua strings, so the raising code below leaks nothing. */
  lua_pushstring(L, base_url ? base_url : ""); /* 4 */
  if (port) lua_pushfstring(L, "%s:%s", host, port);
  else lua_pushstring(L, host); /* 5: Host header */
  if (query) lua_pushfstring(L, "%s?%s", path, query);
  else lua_pushstring(L, path); /* 6: request target */
  curl_free(host), curl_free(port), curl_free(path), curl_free(query), curl_free(base_url);
  if (lua_rawlen(L, 4) == 0) return luaL_argerror(L, 1, "not a valid URL");

  if (fill_random(raw, sizeof raw) != 0) return luaL_error(L, "getrandom: %s", strerror(errno));
  base64(raw, sizeof raw, key);
  ae_ws_accept_key(key, strlen(key), accept);
  build_request(L, 2, lua_tostring(L, 6), lua_tostring(L, 5), key); /* 7 */
  head = lua_tolstring(L, 7, &head_len);

  /* From here on: no raising until the handle owns what it allocates. */
  w = new_handle(L, max_msg, control); /* 8 */
  memcpy(w->accept, accept, sizeof accept);
  w->out = malloc(head_len);
  w->multi = curl_multi_init();
  w->easy = curl_easy_init();
  if (!w->out || !w->multi || !w->easy) {
    setup_fail(L, w, "websocket: out of memory");
    return 2;
  }
  memcpy(w->out, head, head_len);
  w->out_len = head_len;
#define SET(o, v)                                                                                  \
  if (rc == CURLE_OK) rc = curl_easy_setopt(w->easy, o, v)
  SET(CURLOPT_URL, lua_tostring(L, 4));
  SET(CURLOPT_CONNECT_ONLY, 1L);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_ERRORBUFFER, w->errbuf);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_HTTPPROXYTUNNEL, 1L); /* through a proxy: CONNECT, then our own bytes */
  SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000 + 0.5));
  if (cafile) SET(CURLOPT_CAINFO, cafile);
  if (capath) SET(CURLOPT_CAPATH, capath);
  if (proxy) SET(CURLOPT_PROXY, proxy);
  SET(CURLOPT_SSL_VERIFYPEER, insecure ? 0L : 1L);
  SET(CURLOPT_SSL_VERIFYHOST, insecure ? 0L : 2L);
#undef SET
  if (rc != CURLE_OK) {
    setup_fail(L, w, curl_easy_strerror(rc));
    return 2;
  }
  if (curl_multi_add_handle(w->multi, w->easy) != CURLM_OK) {
    setup_fail(L, w, "websocket: cannot start connecting");
    return 2;
  }
  w->state = WS_CONNECTING;
  return 1;
}

/* ---- the server side (used by server.c) ------------------------------------------- */

ae_ws *ae_ws_new_server(lua_State *L, int opts) {
  uint64_t max_msg = (uint64_t)DEFAULT_MAX_MESSAGE;
  int control = 0;
  ae_ws *w;
  if (opts) {
    max_msg = opt_max_msg(L, opts);
    control = ae_optboolfield(L, opts, "control_frames", 0);
  }
  w = new_handle(L, max_msg, control);
  w->is_server = 1;
  /* The framer exists now, so messages can be queued before the upgrade. */
  if (make_ctx(w) != 0) luaL_error(L, "websocket: out of memory");
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
    w->in = malloc(n);
    if (!w->in) {
      ws_fail(w, "other", "websocket: out of memory");
      return;
    }
    memcpy(w->in, extra, n);
    w->in_len = w->in_cap = n;
  }
  w->state = WS_OPEN;
}

void ae_ws_fail_upgrade(ae_ws *w, const char *why) {
  if (w->state == WS_UPGRADING) ws_fail(w, "closed", "websocket: %s", why);
}

/* Non-blocking progress for the server's poll: 1 when Lua has news (a
 * message, or the connection ended or failed since the last call). */
int ae_ws_pump(ae_ws *w) {
  int before = w->state;
  size_t n = w->nmsg;
  if (w->state != WS_OPEN) return 0;
  ws_step(w);
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

/* Fill p from item at idx (an fd, or a WebSocket); returns 1 if p is set,
 * 0 if the item waits on nothing nameable (the caller caps its wait). */
int ae_waitfd_item(lua_State *L, int idx, struct pollfd *p) {
  ae_ws *w;
  int fd;
  short ev;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    p->fd = (int)lua_tointeger(L, idx);
    p->events = POLLIN;
    p->revents = 0;
    return 1;
  }
  if (!ae_ws_is_ws(L, idx, &w))
    luaL_error(L, "wait list entries must be file descriptors or WebSockets");
  if (ae_ws_waitfd(w, &fd, &ev) != 1 || ev == 0) return 0;
  p->fd = fd;
  p->events = ev;
  p->revents = 0;
  return 1;
}

#define SHORT_WAIT_MS 10 /* for waits with no socket to name yet (connecting) */

/* core.wait_fds(list, timeout) -> number of ready entries: sleep until one of
 * the fds/WebSockets in list is ready or the timeout passes. */
static int l_wait_fds(lua_State *L) {
  struct pollfd local[16], *p = local;
  int n, i, k = 0, shortw = 0, r;
  lua_Number t;
  luaL_checktype(L, 1, LUA_TTABLE);
  t = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, t >= 0, 2, "timeout must be a non-negative number");
  n = (int)lua_rawlen(L, 1);
  for (i = 1; i <= n; i++) { /* check first: nothing below raises */
    ae_ws *w;
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) != LUA_TNUMBER && !ae_ws_is_ws(L, -1, &w))
      luaL_error(L, "wait list entries must be file descriptors or WebSockets");
    lua_pop(L, 1);
  }
  if (n > 16) p = lua_newuserdatauv(L, sizeof *p * (size_t)n, 0);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (ae_waitfd_item(L, -1, &p[k])) k++;
    else shortw = 1;
    lua_pop(L, 1);
  }
  {
    double ms = t > LIMIT_SECONDS ? LIMIT_SECONDS * 1000 : t * 1000;
    int msi = ms > INT_MAX ? INT_MAX : (int)ceil(ms);
    if (shortw && msi > SHORT_WAIT_MS) msi = SHORT_WAIT_MS;
    r = poll(p, (nfds_t)k, msi);
  }
  lua_pushinteger(L, r < 0 ? 0 : r + shortw);
  return 1;
}

void ae_open_websocket(lua_State *L) {
  static const luaL_Reg methods[] = {{"connect", w_connect},
                                     {"send", w_send},
                                     {"receive", w_receive},
                                     {"ping", w_ping},
                                     {"flush", w_flush},
                                     {"shutdown", w_shutdown},
                                     {"close", w_close},
                                     {"fd", w_fd},
                                     {"state", w_state},
                                     {"close_info", w_close_info},
                                     {NULL, NULL}};
  luaL_getmetatable(L, WS_MT);
  if (lua_isnil(L, -1)) ae_newclass(L, WS_MT, methods, w_gc, w_tostring);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_ws_connect);
  lua_setfield(L, -2, "ws_connect");
  lua_pushcfunction(L, l_wait_fds);
  lua_setfield(L, -2, "wait_fds");
}

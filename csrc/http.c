/* analytics_engine.core http_session: an HTTP client on a libcurl multi handle.
 *
 * One CURLM per session (it owns the connection cache, so keep-alive works
 * across transfers), a small pool of idle easy handles, and transfers that
 * live entirely in C: nothing calls back into Lua, so no lua_error can cross a
 * libcurl frame. Every Lua-side check of a request happens before any C
 * resource is acquired; finished transfers wait in a FIFO until request() or
 * poll() turns them into Lua tables. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "core.h"

#define SESSION_MT "analytics_engine.HttpSession"

#define DEFAULT_MAX_IDLE 16
#define LIMIT_MAX_IDLE 1024
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_MAX_RESPONSE (64.0 * 1024 * 1024)
#define MAX_HEADER_BYTES (1024 * 1024) /* all header lines of one response */
#define LIMIT_SECONDS 1e8              /* longer timeouts are clamped (about 3 years) */

/* ---- growable byte buffer ----------------------------------------------- */

typedef struct {
  char *p;
  size_t n, cap;
} ae_buf;

static int buf_add(ae_buf *b, const char *p, size_t n) {
  if (n > b->cap - b->n) {
    size_t cap = b->cap ? b->cap : 1024;
    char *np;
    while (cap - b->n < n) {
      if (cap > SIZE_MAX / 2) return -1;
      cap *= 2;
    }
    np = realloc(b->p, cap);
    if (np == NULL) return -1;
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

/* ---- transfers and sessions --------------------------------------------- */

typedef struct xfer {
  struct xfer *next;
  lua_Integer id;
  CURL *easy;                 /* NULL once finished */
  struct curl_slist *headers; /* request headers, freed when finished */
  ae_buf body;                /* response body */
  ae_buf head;                /* header lines of the last response */
  curl_off_t max_size;        /* 0 = unlimited */
  int too_large; /* 1: body past max_size, 2: headers past MAX_HEADER_BYTES */
  int oom, done;
  CURLcode result;
  long status, version;
  double total_time;
  char *url; /* effective URL, copied at completion */
  char errbuf[CURL_ERROR_SIZE];
} xfer;

typedef struct {
  CURLM *multi;          /* NULL when closed */
  xfer *active;          /* in flight */
  xfer *done, *done_last; /* finished, not yet returned (FIFO) */
  CURL **idle;           /* reset easy handles kept for reuse */
  int nidle, max_idle;
  lua_Integer next_id;
} session;

/* Everything read from a request table, before any C resource exists. The
 * strings point into the request table (argument 2), which holds them. */
typedef struct {
  const char *method, *url, *body, *cafile, *capath, *proxy, *user_agent;
  size_t body_len;
  long connect_ms, timeout_ms, low_speed_time, low_speed_limit, http_version;
  int explicit_version;
  curl_off_t max_size;
  int insecure, gzip, fresh;
  int lines, nlines; /* stack index and length of the "Name: value" lines table */
} reqopts;

static void list_remove(xfer **head, xfer **last, xfer *x) {
  xfer *prev = NULL, *it;
  for (it = *head; it != NULL; prev = it, it = it->next) {
    if (it != x) continue;
    if (prev) prev->next = x->next;
    else *head = x->next;
    if (last && *last == x) *last = prev;
    x->next = NULL;
    return;
  }
}

static xfer *list_find(xfer *head, lua_Integer id) {
  for (; head != NULL; head = head->next)
    if (head->id == id) return head;
  return NULL;
}

static void xfer_free(xfer *x) {
  curl_slist_free_all(x->headers);
  free(x->body.p);
  free(x->head.p);
  free(x->url);
  free(x);
}

static CURL *pool_get(session *s) {
  if (s->nidle > 0) return s->idle[--s->nidle];
  return curl_easy_init();
}

/* Reset clears every option (and so every pointer into a transfer); the
 * connections themselves stay in the multi handle's cache. */
static void pool_put(session *s, CURL *e) {
  if (s->nidle < s->max_idle) {
    curl_easy_reset(e);
    s->idle[s->nidle++] = e;
  } else {
    curl_easy_cleanup(e);
  }
}

/* Take an in-flight transfer out of the multi handle and give back its easy. */
static void xfer_detach(session *s, xfer *x) {
  list_remove(&s->active, NULL, x);
  if (x->easy) {
    curl_multi_remove_handle(s->multi, x->easy);
    pool_put(s, x->easy);
    x->easy = NULL;
  }
  curl_slist_free_all(x->headers);
  x->headers = NULL;
}

static void xfer_finish(session *s, xfer *x, CURLcode rc) {
  char *url = NULL;
  x->result = rc;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
  curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &x->version);
  curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &x->total_time);
  if (curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url)
    x->url = strdup(url); /* NULL on OOM: reported as "" */
  xfer_detach(s, x);
  x->done = 1;
  if (s->done_last) s->done_last->next = x;
  else s->done = x;
  s->done_last = x;
}

/* Move every completed transfer from the multi handle to the done list. */
static void collect(session *s) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result; /* m dies with remove_handle */
    char *priv = NULL;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    if (priv) xfer_finish(s, (xfer *)priv, rc);
  }
}

static void session_close(session *s) {
  int i;
  while (s->active) {
    xfer *x = s->active;
    s->active = x->next;
    if (x->easy) {
      if (s->multi) curl_multi_remove_handle(s->multi, x->easy);
      curl_easy_cleanup(x->easy);
    }
    xfer_free(x);
  }
  while (s->done) {
    xfer *x = s->done;
    s->done = x->next;
    xfer_free(x);
  }
  s->done_last = NULL;
  for (i = 0; i < s->nidle; i++) curl_easy_cleanup(s->idle[i]);
  free(s->idle);
  s->idle = NULL;
  s->nidle = s->max_idle = 0;
  if (s->multi) {
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
  }
}

/* ---- libcurl callbacks (no Lua in here) ---------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  xfer *x = (xfer *)ud;
  size_t len = size * nmemb;
  if (x->max_size > 0 && (curl_off_t)(x->body.n + len) > x->max_size) {
    x->too_large = 1;
    return 0;
  }
  if (buf_add(&x->body, p, len) != 0) {
    x->oom = 1;
    return 0;
  }
  return len;
}

/* One complete header line per call. A status line starts a new response
 * (after 1xx or a proxy CONNECT), so only the last response's lines are kept. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
  xfer *x = (xfer *)ud;
  size_t len = size * nmemb;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) x->head.n = 0;
  if (x->head.n + len > MAX_HEADER_BYTES) {
    x->too_large = 2;
    return 0;
  }
  if (buf_add(&x->head, p, len) != 0) {
    x->oom = 1;
    return 0;
  }
  return len;
}

/* ---- results ------------------------------------------------------------- */

static void push_error(lua_State *L, const char *kind, const char *message, lua_Integer code) {
  lua_createtable(L, 0, 3);
  ae_setstr(L, "kind", kind);
  ae_setstr(L, "message", message);
  ae_setint(L, "curl_code", code);
}

static const char *error_kind(const xfer *x) {
  if (x->too_large) return "too_large";
  switch (x->result) {
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_COULDNT_CONNECT: return "connect";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return "resolve";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_USE_SSL_FAILED:
#if LIBCURL_VERSION_NUM >= 0x074900
  case CURLE_SSL_CLIENTCERT:
#endif
    return "tls";
  case CURLE_FILESIZE_EXCEEDED: return "too_large";
  case CURLE_SEND_ERROR: return "send";
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE: return "recv";
  case CURLE_ABORTED_BY_CALLBACK: return "aborted";
  default: return "other";
  }
}

static void push_transfer_error(lua_State *L, xfer *x) {
  char msg[CURL_ERROR_SIZE + 128];
  const char *kind = error_kind(x);
  size_t n = strlen(x->errbuf);
  while (n > 0 && (x->errbuf[n - 1] == '\n' || x->errbuf[n - 1] == '\r')) x->errbuf[--n] = '\0';
  if (x->oom)
    snprintf(msg, sizeof msg, "out of memory while receiving the response");
  else if (x->too_large == 2)
    snprintf(msg, sizeof msg, "response headers exceed %d bytes", MAX_HEADER_BYTES);
  else if (strcmp(kind, "too_large") == 0)
    snprintf(msg, sizeof msg, "response body exceeds max_response_size (%lld bytes): %s",
             (long long)x->max_size, curl_easy_strerror(x->result));
  else if (n > 0)
    snprintf(msg, sizeof msg, "%s: %s", curl_easy_strerror(x->result), x->errbuf);
  else
    snprintf(msg, sizeof msg, "%s", curl_easy_strerror(x->result));
  push_error(L, kind, msg, (lua_Integer)x->result);
}

/* Header table from the raw lines: names lower-cased, values trimmed,
 * repeated names joined with ", ". */
static void push_headers(lua_State *L, ae_buf *h) {
  size_t i = 0;
  lua_newtable(L);
  while (i < h->n) {
    char *line = h->p + i, *nl = memchr(line, '\n', h->n - i), *colon, *v, *ve, *c;
    size_t len = nl ? (size_t)(nl - line) : h->n - i;
    i += len + (nl ? 1 : 0);
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) continue;
    colon = memchr(line, ':', len);
    if (colon == NULL || colon == line) continue;
    for (c = line; c < colon; c++)
      if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    v = colon + 1;
    ve = line + len;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r')) ve--;
    lua_pushlstring(L, line, (size_t)(colon - line));
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, v, (size_t)(ve - v));
    } else {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
}

static const char *version_name(long v) {
  switch (v) {
  case CURL_HTTP_VERSION_1_0: return "1.0";
  case CURL_HTTP_VERSION_1_1: return "1.1";
  case CURL_HTTP_VERSION_2_0: return "2";
#if LIBCURL_VERSION_NUM >= 0x074200
  case CURL_HTTP_VERSION_3: return "3";
#endif
  default: return "";
  }
}

static void push_response(lua_State *L, xfer *x) {
  lua_createtable(L, 0, 6);
  ae_setint(L, "status", (lua_Integer)x->status);
  push_headers(L, &x->head);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.n);
  lua_setfield(L, -2, "body");
  ae_setnum(L, "total_time", (lua_Number)x->total_time);
  ae_setstr(L, "http_version", version_name(x->version));
  ae_setstr(L, "url", x->url ? x->url : "");
}

/* Push res or err for a finished transfer; 1 when it is a response. */
static int push_outcome(lua_State *L, xfer *x) {
  if (x->result == CURLE_OK) {
    push_response(L, x);
    return 1;
  }
  push_transfer_error(L, x);
  return 0;
}

/* Turn a finished transfer into request()'s return values and free it. A Lua
 * memory error while building leaves it owned by the session. */
static int deliver(lua_State *L, session *s, xfer *x) {
  int n = 1;
  if (x->result != CURLE_OK) {
    luaL_pushfail(L);
    n = 2;
  }
  push_outcome(L, x);
  list_remove(&s->done, &s->done_last, x);
  xfer_free(x);
  return n;
}

static int push_closed(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static int push_multi_error(lua_State *L, CURLMcode mc) {
  char msg[256];
  snprintf(msg, sizeof msg, "curl multi: %s", curl_multi_strerror(mc));
  luaL_pushfail(L);
  push_error(L, "other", msg, 0);
  return 2;
}

/* ---- reading a request table (may raise; holds no C resources) ----------- */

static const char *opt_cstr(lua_State *L, int idx, const char *k, size_t *plen) {
  size_t len = 0;
  const char *s = ae_optstrfield(L, idx, k, &len);
  if (s && strlen(s) != len) luaL_error(L, "field '%s' must not contain NUL bytes", k);
  if (plen) *plen = len;
  return s;
}

static lua_Number opt_nonneg(lua_State *L, int idx, const char *k, lua_Number def) {
  lua_Number v = ae_optnumfield(L, idx, k, def);
  if (!(v >= 0)) luaL_error(L, "field '%s' must be a non-negative number", k);
  return v > LIMIT_SECONDS * 1e6 ? LIMIT_SECONDS * 1e6 : v;
}

static long opt_ms(lua_State *L, int idx, const char *k, lua_Number def) {
  lua_Number v = opt_nonneg(L, idx, k, def);
  long ms;
  if (v > LIMIT_SECONDS) v = LIMIT_SECONDS;
  ms = (long)(v * 1000 + 0.5);
  return (v > 0 && ms == 0) ? 1 : ms;
}

static int opt_bool(lua_State *L, int idx, const char *k, int def) {
  int v = def;
  lua_getfield(L, idx, k);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TBOOLEAN) luaL_error(L, "field '%s' must be a boolean", k);
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token(const char *s, size_t len) {
  size_t i;
  if (len == 0) return 0;
  for (i = 0; i < len; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

static int has_ctl(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

/* Leaves a table of complete "Name: value" lines at the top of the stack.
 * Map form: name -> string|number (an empty string sends an empty header).
 * Array form: "Name: value" strings, passed to libcurl as they are, so
 * "Name:" removes a header libcurl would add. */
static void read_headers(lua_State *L, int idx, reqopts *o) {
  int t, n = 0;
  lua_newtable(L);
  o->lines = lua_gettop(L);
  lua_getfield(L, idx, "headers");
  t = lua_gettop(L);
  if (lua_isnil(L, t)) {
    lua_pop(L, 1);
    o->nlines = 0;
    return;
  }
  if (!lua_istable(L, t)) luaL_error(L, "field 'headers' must be a table");
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    size_t klen, vlen;
    const char *k, *v;
    if (lua_type(L, -2) == LUA_TNUMBER) {
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "field 'headers' array entries must be \"Name: value\" strings");
      v = lua_tolstring(L, -1, &vlen);
      if (vlen == 0 || has_ctl(v, vlen))
        luaL_error(L, "field 'headers' entry must be a non-empty line without CR, LF or NUL");
      lua_pushvalue(L, -1);
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      int vt = lua_type(L, -1);
      k = lua_tolstring(L, -2, &klen);
      if (!is_token(k, klen)) luaL_error(L, "field 'headers' has an invalid header name '%s'", k);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
        luaL_error(L, "field 'headers' value of '%s' must be a string or a number", k);
      lua_pushvalue(L, -1); /* convert a copy, never the key */
      v = lua_tolstring(L, -1, &vlen);
      if (has_ctl(v, vlen)) luaL_error(L, "field 'headers' value of '%s' contains CR, LF or NUL", k);
      if (vlen == 0) lua_pushfstring(L, "%s;", k);
      else lua_pushfstring(L, "%s: %s", k, v);
      lua_remove(L, -2);
    } else {
      luaL_error(L, "field 'headers' keys must be header names or array indices");
    }
    lua_rawseti(L, o->lines, ++n);
    lua_pop(L, 1); /* value; key stays for lua_next */
  }
  lua_pop(L, 1); /* headers */
  o->nlines = n;
}

static void read_request(lua_State *L, int idx, reqopts *o) {
  size_t len;
  const char *hv;
  luaL_checktype(L, idx, LUA_TTABLE);
  memset(o, 0, sizeof *o);
  o->method = opt_cstr(L, idx, "method", &len);
  if (o->method == NULL) o->method = "GET";
  else if (!is_token(o->method, len)) luaL_error(L, "field 'method' must be an HTTP method name");
  o->url = opt_cstr(L, idx, "url", NULL);
  if (o->url == NULL) luaL_error(L, "field 'url' is required (a string)");
  o->body = ae_optstrfield(L, idx, "body", &o->body_len);
  o->cafile = opt_cstr(L, idx, "cafile", NULL);
  o->capath = opt_cstr(L, idx, "capath", NULL);
  o->proxy = opt_cstr(L, idx, "proxy", NULL);
  o->user_agent = opt_cstr(L, idx, "user_agent", NULL);
  o->connect_ms = opt_ms(L, idx, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
  o->timeout_ms = opt_ms(L, idx, "timeout", 0);
  o->low_speed_time = (long)(opt_ms(L, idx, "low_speed_time", 0) + 999) / 1000;
  o->low_speed_limit = (long)opt_nonneg(L, idx, "low_speed_limit", 1);
  o->max_size = (curl_off_t)opt_nonneg(L, idx, "max_response_size", DEFAULT_MAX_RESPONSE);
  o->insecure = opt_bool(L, idx, "insecure", 0);
  o->gzip = opt_bool(L, idx, "gzip", 1);
  o->fresh = opt_bool(L, idx, "fresh_connect", 0);
  o->http_version = CURL_HTTP_VERSION_2TLS;
  hv = opt_cstr(L, idx, "http_version", NULL);
  if (hv != NULL) {
    o->explicit_version = 1;
    if (strcmp(hv, "1.0") == 0) o->http_version = CURL_HTTP_VERSION_1_0;
    else if (strcmp(hv, "1.1") == 0) o->http_version = CURL_HTTP_VERSION_1_1;
    else if (strcmp(hv, "2") == 0) o->http_version = CURL_HTTP_VERSION_2TLS;
    else luaL_error(L, "field 'http_version' must be \"1.0\", \"1.1\" or \"2\"");
  }
  read_headers(L, idx, o);
}

/* ---- starting a transfer (no Lua errors from here on) -------------------- */

#define SETOPT(opt, val)                                   \
  do {                                                     \
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); \
  } while (0)

static CURLcode xfer_setopts(xfer *x, const reqopts *o) {
  CURL *e = x->easy;
  CURLcode rc = CURLE_OK;
  const char *m = o->method;
  SETOPT(CURLOPT_URL, o->url);
  SETOPT(CURLOPT_PRIVATE, (void *)x);
  SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, (void *)x);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, (void *)x);
  if (strcmp(m, "HEAD") == 0) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else if (strcmp(m, "GET") == 0 && o->body == NULL) {
    SETOPT(CURLOPT_HTTPGET, 1L);
  } else {
    if (strcmp(m, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, m);
    if (o->body != NULL || strcmp(m, "POST") == 0) {
      /* size first: COPYPOSTFIELDS copies that many bytes (NUL-safe) */
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
      SETOPT(CURLOPT_COPYPOSTFIELDS, o->body ? o->body : "");
    }
  }
  if (x->headers) SETOPT(CURLOPT_HTTPHEADER, x->headers);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, o->connect_ms);
  SETOPT(CURLOPT_TIMEOUT_MS, o->timeout_ms);
  if (o->low_speed_time > 0) {
    SETOPT(CURLOPT_LOW_SPEED_TIME, o->low_speed_time);
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, o->low_speed_limit > 0 ? o->low_speed_limit : 1L);
  }
  if (o->max_size > 0) SETOPT(CURLOPT_MAXFILESIZE_LARGE, o->max_size);
  if (o->cafile) SETOPT(CURLOPT_CAINFO, o->cafile);
  if (o->capath) SETOPT(CURLOPT_CAPATH, o->capath);
  if (o->insecure) {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
  }
  if (o->gzip) SETOPT(CURLOPT_ACCEPT_ENCODING, "");
  /* libcurl silently re-sends a request whose reused connection died before
   * any answer; for a request that creates something that could create it
   * twice, so such requests ask for a connection of their own. */
  if (o->fresh) SETOPT(CURLOPT_FRESH_CONNECT, 1L);
  if (o->proxy) SETOPT(CURLOPT_PROXY, o->proxy);
  if (o->user_agent) SETOPT(CURLOPT_USERAGENT, o->user_agent);
  if (rc == CURLE_OK) {
    CURLcode v = curl_easy_setopt(e, CURLOPT_HTTP_VERSION, o->http_version);
    if (o->explicit_version) rc = v; /* the default may be unsupported: fine */
  }
  return rc;
}

/* Start a transfer, or push nil, err and return NULL. */
static xfer *xfer_start(lua_State *L, session *s, const reqopts *o) {
  CURLcode rc = CURLE_OUT_OF_MEMORY;
  const char *why = NULL;
  CURLMcode mc;
  int i;
  xfer *x = (xfer *)calloc(1, sizeof *x);
  if (x != NULL) x->easy = pool_get(s);
  if (x == NULL || x->easy == NULL) goto fail;
  x->max_size = o->max_size;
  for (i = 1; i <= o->nlines; i++) {
    struct curl_slist *l;
    lua_rawgeti(L, o->lines, i); /* strings already made: cannot raise */
    l = curl_slist_append(x->headers, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (l == NULL) goto fail;
    x->headers = l;
  }
  rc = xfer_setopts(x, o);
  if (rc != CURLE_OK) goto fail;
  mc = curl_multi_add_handle(s->multi, x->easy);
  if (mc != CURLM_OK) {
    rc = CURLE_FAILED_INIT;
    why = curl_multi_strerror(mc);
    goto fail;
  }
  x->id = ++s->next_id;
  x->next = s->active;
  s->active = x;
  return x;
fail:
  if (x != NULL) {
    if (x->easy) pool_put(s, x->easy);
    xfer_free(x);
  }
  luaL_pushfail(L);
  push_error(L, "other", why ? why : curl_easy_strerror(rc), (lua_Integer)rc);
  return NULL;
}

/* ---- driving the multi handle -------------------------------------------- */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Perform, collect, and wait for activity until the deadline, a completion
 * (when `until` is NULL) or the completion of `until`. */
static CURLMcode drive(session *s, double deadline, xfer *until) {
  for (;;) {
    int running;
    double left;
    CURLMcode mc = curl_multi_perform(s->multi, &running);
    if (mc != CURLM_OK) return mc;
    collect(s);
    if (until ? until->done : (s->done != NULL)) return CURLM_OK;
    if (s->active == NULL) return CURLM_OK;
    left = deadline - now_seconds();
    if (left <= 0) return CURLM_OK;
    left = left * 1000 + 1;
    mc = curl_multi_poll(s->multi, NULL, 0, left > INT_MAX ? INT_MAX : (int)left, NULL);
    if (mc != CURLM_OK) return mc;
  }
}

/* ---- methods -------------------------------------------------------------- */

static session *check_session(lua_State *L) {
  return (session *)luaL_checkudata(L, 1, SESSION_MT);
}

static int s_start(lua_State *L) {
  session *s = check_session(L);
  reqopts o;
  xfer *x;
  if (s->multi == NULL) return push_closed(L);
  read_request(L, 2, &o);
  x = xfer_start(L, s, &o);
  if (x == NULL) return 2;
  lua_pushinteger(L, x->id);
  return 1;
}

static int s_request(lua_State *L) {
  session *s = check_session(L);
  reqopts o;
  xfer *x;
  CURLMcode mc;
  if (s->multi == NULL) return push_closed(L);
  read_request(L, 2, &o);
  x = xfer_start(L, s, &o);
  if (x == NULL) return 2;
  do {
    mc = drive(s, now_seconds() + 3600, x);
  } while (mc == CURLM_OK && !x->done);
  if (mc != CURLM_OK) {
    xfer_detach(s, x);
    xfer_free(x);
    return push_multi_error(L, mc);
  }
  return deliver(L, s, x);
}

static int s_poll(lua_State *L) {
  session *s = check_session(L);
  lua_Number t = luaL_optnumber(L, 2, 0);
  CURLMcode mc;
  int n = 0;
  luaL_argcheck(L, t >= 0, 2, "timeout must be a non-negative number");
  if (s->multi == NULL) return push_closed(L);
  mc = drive(s, now_seconds() + (t > LIMIT_SECONDS ? LIMIT_SECONDS : t), NULL);
  if (mc != CURLM_OK) return push_multi_error(L, mc);
  lua_newtable(L);
  while (s->done != NULL) {
    xfer *x = s->done;
    int ok;
    lua_createtable(L, 0, 2);
    ae_setint(L, "id", x->id);
    ok = push_outcome(L, x);
    lua_setfield(L, -2, ok ? "res" : "err");
    lua_rawseti(L, -2, ++n);
    list_remove(&s->done, &s->done_last, x);
    xfer_free(x);
  }
  return 1;
}

/* Transfers not yet returned: in flight plus finished-but-not-polled. */
static int s_pending(lua_State *L) {
  session *s = check_session(L);
  lua_Integer n = 0;
  xfer *x;
  if (s->multi == NULL) return push_closed(L);
  for (x = s->active; x; x = x->next) n++;
  for (x = s->done; x; x = x->next) n++;
  lua_pushinteger(L, n);
  return 1;
}

static int s_cancel(lua_State *L) {
  session *s = check_session(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  xfer *x;
  if (s->multi == NULL) return push_closed(L);
  if ((x = list_find(s->active, id)) != NULL) {
    xfer_detach(s, x);
    xfer_free(x);
  } else if ((x = list_find(s->done, id)) != NULL) {
    list_remove(&s->done, &s->done_last, x);
    xfer_free(x);
  }
  lua_pushboolean(L, x != NULL);
  return 1;
}

static int s_close(lua_State *L) {
  session_close(check_session(L));
  lua_pushboolean(L, 1);
  return 1;
}

static int s_gc(lua_State *L) {
  session_close(check_session(L));
  return 0;
}

static int s_tostring(lua_State *L) {
  session *s = check_session(L);
  if (s->multi == NULL) lua_pushliteral(L, SESSION_MT " (closed)");
  else lua_pushfstring(L, SESSION_MT " (%p)", (void *)s);
  return 1;
}

/* core.http_session(opts?) */
static int l_http_session(lua_State *L) {
  lua_Number max_idle = DEFAULT_MAX_IDLE;
  session *s;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    max_idle = ae_optnumfield(L, 1, "max_idle", DEFAULT_MAX_IDLE);
    if (!(max_idle >= 0 && max_idle <= LIMIT_MAX_IDLE) || max_idle != (lua_Number)(int)max_idle)
      luaL_error(L, "field 'max_idle' must be an integer between 0 and %d", LIMIT_MAX_IDLE);
  }
  s = (session *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s); /* closed until the multi handle exists */
  luaL_getmetatable(L, SESSION_MT);
  lua_setmetatable(L, -2);
  if (max_idle > 0) {
    s->idle = (CURL **)calloc((size_t)max_idle, sizeof *s->idle);
    if (s->idle == NULL) goto fail;
    s->max_idle = (int)max_idle;
  }
  s->multi = curl_multi_init();
  if (s->multi == NULL) goto fail;
  return 1;
fail:
  session_close(s);
  luaL_pushfail(L);
  lua_pushliteral(L, "cannot create an HTTP session (out of memory)");
  return 2;
}

static const luaL_Reg session_methods[] = {
  {"request", s_request}, {"start", s_start},   {"poll", s_poll},   {"pending", s_pending},
  {"cancel", s_cancel},   {"close", s_close},   {NULL, NULL},
};

void ae_open_http(lua_State *L) {
  static int curl_ready = 0;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "curl_global_init failed");
    curl_ready = 1;
  }
  luaL_getmetatable(L, SESSION_MT);
  if (lua_isnil(L, -1)) ae_newclass(L, SESSION_MT, session_methods, s_gc, s_tostring);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_http_session);
  lua_setfield(L, -2, "http_session");
}

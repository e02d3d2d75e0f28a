/* analytics_engine.core http_session: an HTTP client on a libcurl multi handle.
 *
 * One CURLM per session (it owns the connection cache, so keep-alive works
 * across transfers), a small pool of idle easy handles, and transfers that
 * live entirely in C: nothing calls back into Lua, so no lua_error can cross a
 * libcurl frame. Every Lua-side check of a request happens before any C
 * resource is acquired; finished transfers wait in a FIFO until request() or
 * poll() turns them into Lua tables. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "buf.h"
#include "clock.h"
#include "core.h"
#include "ws.h"

#define SESSION_MT "analytics_engine.HttpSession"
#define RESPONSE_MT "analytics_engine.HttpResponse"
#define HEADERS_MT "analytics_engine.HttpHeaders"

/* A core.http_headers value: NUL-terminated header lines, back to back. */
typedef struct {
  size_t len;
  char block[1];
} hset;

#define DEFAULT_MAX_IDLE 16
#define LIMIT_MAX_IDLE 1024
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_MAX_RESPONSE (64.0 * 1024 * 1024)
/* All header lines of one response. Below libcurl's own total (300 KB since
 * 7.84), so this check fires first and the error can name the limit. */
#define MAX_HEADER_BYTES (256 * 1024)

/* ---- transfers and sessions --------------------------------------------- */

/* Transfer options that are usually the same for every request of a session:
 * a session holds them as defaults, and an easy handle remembers the ones it
 * was set up with, so the next request with the same ones skips
 * curl_easy_reset and the ~20 curl_easy_setopt calls that set them again. */
typedef struct {
  const char *cafile, *capath, *proxy, *user_agent; /* owned by whoever holds the xopts */
  long connect_ms, timeout_ms, low_speed_time, low_speed_limit, http_version;
  int explicit_version, insecure, gzip;
  curl_off_t max_size;
} xopts;

/* An easy handle and what it was last set up with. Between transfers it keeps
 * its options (a reused handle is how libcurl is meant to be used); only the
 * per-request ones (URL, method, body, the pointers to the transfer) are set
 * again. Its header list lives here, not in the transfer, so an unchanged set
 * of header lines is neither rebuilt nor set again. */
typedef struct {
  CURL *e;
  int tuned; /* 1: x, method and has_body describe the handle's options */
  xopts x;   /* string fields: copies owned here (when tuned) */
  char method[16];
  int has_body;
  struct curl_slist *headers; /* set as CURLOPT_HTTPHEADER (when tuned) */
  char *hblock;               /* the NUL-separated lines `headers` was built from */
  size_t hlen;
} ehandle;

typedef struct xfer {
  struct xfer *next;
  lua_Integer id;
  ehandle *easy;       /* NULL once finished */
  ae_buf body;         /* response body */
  ae_buf head;         /* header lines of the last response */
  curl_off_t max_size; /* 0 = unlimited */
  int too_large;       /* 1: body past max_size, 2: headers past MAX_HEADER_BYTES */
  int oom, done;
  int switched; /* the server answered 101 to a request that asked for no upgrade */
  CURLcode result;
  long status, version;
  double total_time;
  char *url;   /* effective URL, copied at completion */
  int url_idx; /* request() only: stack index of the request's url string */
  char errbuf[CURL_ERROR_SIZE];
} xfer;

typedef struct {
  CURLM *multi;           /* NULL when closed */
  xfer *active;           /* in flight */
  xfer *done, *done_last; /* finished, not yet returned (FIFO) */
  ehandle **idle;         /* easy handles kept for reuse, options intact */
  int nidle, max_idle;
  lua_Integer next_id;
  xopts defaults; /* http_session{ defaults = ... }; strings owned here */
} session;

/* Everything read from a request table, before any C resource exists. The
 * strings point into the request table (argument 2), the session's defaults
 * or the stack, which hold them until the transfer has been started. */
typedef struct {
  const char *method, *url, *body;
  size_t body_len;
  int fresh;
  xopts x;
  const char *hblock; /* header lines, each ending in NUL; hlen 0: none */
  size_t hlen;
  int url_idx; /* stack index of the url string */
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
  ae_buf_free(&x->body);
  ae_buf_free(&x->head);
  free(x->url);
  free(x);
}

static void xopts_free(xopts *x) {
  free((char *)x->cafile);
  free((char *)x->capath);
  free((char *)x->proxy);
  free((char *)x->user_agent);
  x->cafile = x->capath = x->proxy = x->user_agent = NULL;
}

/* dst = src with copies of its strings; -1 (dst holding no strings) on OOM. */
static int xopts_copy(xopts *dst, const xopts *src) {
  *dst = *src;
  dst->cafile = src->cafile ? strdup(src->cafile) : NULL;
  dst->capath = src->capath ? strdup(src->capath) : NULL;
  dst->proxy = src->proxy ? strdup(src->proxy) : NULL;
  dst->user_agent = src->user_agent ? strdup(src->user_agent) : NULL;
  if ((src->cafile && !dst->cafile) || (src->capath && !dst->capath) ||
      (src->proxy && !dst->proxy) || (src->user_agent && !dst->user_agent)) {
    xopts_free(dst);
    return -1;
  }
  return 0;
}

static int str_eq(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

static int xopts_equal(const xopts *a, const xopts *b) {
  return a->connect_ms == b->connect_ms && a->timeout_ms == b->timeout_ms &&
         a->low_speed_time == b->low_speed_time && a->low_speed_limit == b->low_speed_limit &&
         a->http_version == b->http_version && a->explicit_version == b->explicit_version &&
         a->insecure == b->insecure && a->gzip == b->gzip && a->max_size == b->max_size &&
         str_eq(a->cafile, b->cafile) && str_eq(a->capath, b->capath) &&
         str_eq(a->proxy, b->proxy) && str_eq(a->user_agent, b->user_agent);
}

/* Forget what the handle was set up with; the next use resets it. */
static void ehandle_untune(ehandle *h) {
  xopts_free(&h->x);
  curl_slist_free_all(h->headers);
  h->headers = NULL;
  free(h->hblock);
  h->hblock = NULL;
  h->hlen = 0;
  h->tuned = 0;
}

static void ehandle_free(ehandle *h) {
  if (h == NULL) return;
  curl_easy_cleanup(h->e);
  ehandle_untune(h);
  free(h);
}

static ehandle *pool_get(session *s) {
  ehandle *h;
  if (s->nidle > 0) return s->idle[--s->nidle];
  h = (ehandle *)calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->e = curl_easy_init();
  if (h->e == NULL) {
    free(h);
    return NULL;
  }
  return h;
}

/* An idle handle keeps its options (and through them, nothing of a finished
 * transfer but pointers it will not use before they are set again); the
 * error buffer is cleared so nothing can write into freed memory. The
 * connections themselves stay in the multi handle's cache. */
static void pool_put(session *s, ehandle *h) {
  if (s->nidle < s->max_idle) {
    curl_easy_setopt(h->e, CURLOPT_ERRORBUFFER, NULL);
    s->idle[s->nidle++] = h;
  } else {
    ehandle_free(h);
  }
}

/* Take an in-flight transfer out of the multi handle and give back its easy. */
static void xfer_detach(session *s, xfer *x) {
  list_remove(&s->active, NULL, x);
  if (x->easy) {
    curl_multi_remove_handle(s->multi, x->easy->e);
    pool_put(s, x->easy);
    x->easy = NULL;
  }
}

static void xfer_finish(session *s, xfer *x, CURLcode rc) {
  char *url = NULL;
  CURL *e = x->easy->e;
  x->result = rc;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x->status);
  curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &x->version);
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &x->total_time);
  if (curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url)
    x->url = strdup(url); /* NULL on OOM: reported as "" */
  if (rc != CURLE_OK) {
    /* libcurl 7.88 can keep pointers into a failed transfer's freed state
     * and read them when the handle is used again (found by
     * fuzz/fuzz_http_response): a handle that failed is never reused. */
    list_remove(&s->active, NULL, x);
    curl_multi_remove_handle(s->multi, x->easy->e);
    ehandle_free(x->easy);
    x->easy = NULL;
  } else {
    xfer_detach(s, x);
  }
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
      if (s->multi) curl_multi_remove_handle(s->multi, x->easy->e);
      ehandle_free(x->easy);
    }
    xfer_free(x);
  }
  while (s->done) {
    xfer *x = s->done;
    s->done = x->next;
    xfer_free(x);
  }
  s->done_last = NULL;
  for (i = 0; i < s->nidle; i++) ehandle_free(s->idle[i]);
  free(s->idle);
  s->idle = NULL;
  s->nidle = s->max_idle = 0;
  xopts_free(&s->defaults);
  if (s->multi) {
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
  }
}

/* ---- libcurl callbacks (no Lua in here) ---------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  xfer *x = (xfer *)ud;
  size_t len = size * nmemb;
  int r = ae_buf_add(&x->body, p, len);
  if (r == 0) return len;
  if (r == AE_BUF_TOOBIG) x->too_large = 1;
  else x->oom = 1;
  return 0;
}

/* One complete header line per call. A status line starts a new response
 * (after 1xx or a proxy CONNECT), so only the last response's lines are kept. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
  xfer *x = (xfer *)ud;
  size_t len = size * nmemb;
  int r;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    const char *sp = memchr(p, ' ', len);
    ae_buf_reset(&x->head);
    /* libcurl would wait for a final answer after a 101 nobody asked for
     * (plain requests never send Upgrade): stop at once instead. */
    if (sp && (size_t)(p + len - sp) > 4 && memcmp(sp + 1, "101", 3) == 0) {
      x->switched = 1;
      return 0;
    }
  }
  r = ae_buf_add(&x->head, p, len);
  if (r == 0) return len;
  if (r == AE_BUF_TOOBIG) x->too_large = 2;
  else x->oom = 1;
  return 0;
}

/* ---- results ------------------------------------------------------------- */

static void push_error(lua_State *L, const char *kind, const char *message, lua_Integer code) {
  lua_createtable(L, 0, 3);
  ae_setstr(L, "kind", kind);
  ae_setstr(L, "message", message);
  ae_setint(L, "curl_code", code);
}

/* libcurl refuses one header line longer than CURL_MAX_HTTP_HEADER with
 * CURLE_OUT_OF_MEMORY (its buffer's limit), or a header block past its total
 * with a receive error: both while the headers are still arriving. */
static int header_overflow(const xfer *x) {
  const char *h = x->head.p;
  size_t n = x->head.len;
  int in_head = x->status == 0 || n < 4 || h == NULL || memcmp(h + n - 4, "\r\n\r\n", 4) != 0;
  if (!in_head) return 0;
  if (x->result == CURLE_OUT_OF_MEMORY) return 1;
  return x->result == CURLE_RECV_ERROR && strstr(x->errbuf, "response headers") != NULL;
}

static const char *error_kind(const xfer *x) {
  if (x->switched) return "protocol";
  if (x->too_large || header_overflow(x)) return "too_large";
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
  if (x->switched)
    snprintf(msg, sizeof msg,
             "the server answered 101 Switching Protocols to a request that asked for no upgrade");
  else if (x->oom) snprintf(msg, sizeof msg, "out of memory while receiving the response");
  else if (x->too_large == 2)
    snprintf(msg, sizeof msg, "response headers exceed the limit of %d KB",
             MAX_HEADER_BYTES / 1024);
  else if (!x->too_large && header_overflow(x))
    snprintf(msg, sizeof msg,
             "a response header exceeds libcurl's limit (%d KB per line, 300 KB in all)",
             CURL_MAX_HTTP_HEADER / 1024);
  else if (strcmp(kind, "too_large") == 0)
    snprintf(msg, sizeof msg, "response body exceeds max_response_size (%lld bytes): %s",
             (long long)x->max_size, curl_easy_strerror(x->result));
  else if (n > 0) snprintf(msg, sizeof msg, "%s: %s", curl_easy_strerror(x->result), x->errbuf);
  else snprintf(msg, sizeof msg, "%s", curl_easy_strerror(x->result));
  push_error(L, kind, msg, (lua_Integer)x->result);
}

/* Header table from the raw header block at stack index `idx`: names
 * lower-cased, values trimmed, repeated names joined with ", ". */
static void push_headers(lua_State *L, int idx) {
  size_t n0, i = 0;
  const char *h = lua_tolstring(L, idx, &n0), *p = h, *end = h + n0;
  char small[128];
  int n = 0;
  /* sized once: growing a table rehashes it at 1, 2, 4 and 8 entries */
  while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) p++, n++;
  lua_createtable(L, 0, n > 2 ? n - 2 : 0); /* not the status line and the blank one */
  while (i < n0) {
    const char *line = h + i, *nl = memchr(line, '\n', n0 - i), *colon, *v, *ve;
    size_t len = nl ? (size_t)(nl - line) : n0 - i, klen, j;
    char *name = small;
    i += len + (nl ? 1 : 0);
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) continue;
    colon = memchr(line, ':', len);
    if (colon == NULL || colon == line) continue;
    klen = (size_t)(colon - line);
    if (klen > sizeof small) name = (char *)lua_newuserdatauv(L, klen, 0);
    for (j = 0; j < klen; j++) {
      char c = line[j];
      name[j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    v = colon + 1;
    ve = line + len;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r')) ve--;
    lua_pushlstring(L, name, klen);
    if (name != small) lua_remove(L, -2);
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

/* __index of responses: res.headers is made from res.raw_headers on first
 * use (then stored), since most answers are only read for status and body. */
static int res_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "headers") != 0) return 0;
  lua_pushliteral(L, "raw_headers");
  lua_rawget(L, 1);
  if (lua_type(L, -1) == LUA_TSTRING) push_headers(L, lua_gettop(L));
  else lua_newtable(L);
  lua_pushliteral(L, "headers");
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
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
  lua_createtable(L, 0, 7);
  luaL_getmetatable(L, RESPONSE_MT);
  lua_setmetatable(L, -2);
  ae_setint(L, "status", (lua_Integer)x->status);
  lua_pushlstring(L, x->head.p ? x->head.p : "", x->head.len);
  lua_setfield(L, -2, "raw_headers");
  lua_pushlstring(L, x->body.p ? x->body.p : "", x->body.len);
  lua_setfield(L, -2, "body");
  ae_setnum(L, "total_time", (lua_Number)x->total_time);
  ae_setstr(L, "http_version", version_name(x->version));
  /* without redirects the effective URL is, in practice, the one asked for:
   * then the request's own string serves, and no new one is made */
  if (x->url_idx && x->url && strcmp(x->url, lua_tostring(L, x->url_idx)) == 0)
    lua_pushvalue(L, x->url_idx);
  else lua_pushstring(L, x->url ? x->url : "");
  lua_setfield(L, -2, "url");
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

/* The fields of a request table. Options (F_CAFILE on) can also be session
 * defaults; the others are per request. */
enum {
  F_METHOD,
  F_URL,
  F_BODY,
  F_HEADERS,
  F_FRESH,
  F_CAFILE,
  F_CAPATH,
  F_PROXY,
  F_USER_AGENT,
  F_CONNECT_TIMEOUT,
  F_TIMEOUT,
  F_LOW_SPEED_TIME,
  F_LOW_SPEED_LIMIT,
  F_MAX_SIZE,
  F_INSECURE,
  F_GZIP,
  F_HTTP_VERSION,
  NFIELDS
};
#define F_FIRST_OPTION F_CAFILE

static const char *const field_names[NFIELDS] = {
    "method",
    "url",
    "body",
    "headers",
    "fresh_connect",
    "cafile",
    "capath",
    "proxy",
    "user_agent",
    "connect_timeout",
    "timeout",
    "low_speed_time",
    "low_speed_limit",
    "max_response_size",
    "insecure",
    "gzip",
    "http_version",
};

static int field_id(const char *k, size_t len) {
  int f;
  for (f = 0; f < NFIELDS; f++) {
    const char *n = field_names[f];
    if (n[0] == k[0] && strlen(n) == len && memcmp(n, k, len) == 0) return f;
  }
  return -1;
}

/* Push the value of every field of the table at `idx` (nil where absent) and
 * return the stack index of the first. A request holds a handful of the 17
 * fields: walking its keys costs less than 17 lookups. A table with a
 * metatable is read with lua_getfield, so inherited fields count too. */
static int collect_fields(lua_State *L, int idx) {
  int base, f;
  luaL_checkstack(L, NFIELDS + 4, "reading a request table");
  base = lua_gettop(L) + 1;
  lua_settop(L, base + NFIELDS - 1);
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    for (f = 0; f < NFIELDS; f++) {
      lua_getfield(L, idx, field_names[f]);
      lua_replace(L, base + f);
    }
    return base;
  }
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    size_t len = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
    f = k ? field_id(k, len) : -1;
    if (f >= 0) lua_replace(L, base + f); /* pops the value; the key stays for lua_next */
    else lua_pop(L, 1);
  }
  return base;
}

/* Typed reads of a collected field at stack index i (nil: absent). */
static const char *str_at(lua_State *L, int i, const char *k, size_t *plen) {
  size_t len = 0;
  const char *s = NULL;
  if (!lua_isnil(L, i)) {
    if (lua_type(L, i) != LUA_TSTRING) luaL_error(L, "field '%s' must be a string", k);
    s = lua_tolstring(L, i, &len);
  }
  if (plen) *plen = len;
  return s;
}

static const char *cstr_at(lua_State *L, int i, const char *k, size_t *plen) {
  size_t len = 0;
  const char *s = str_at(L, i, k, &len);
  if (s && strlen(s) != len) luaL_error(L, "field '%s' must not contain NUL bytes", k);
  if (plen) *plen = len;
  return s;
}

static lua_Number nonneg_at(lua_State *L, int i, const char *k) {
  lua_Number v;
  if (!lua_isnumber(L, i)) luaL_error(L, "field '%s' must be a number", k);
  v = lua_tonumber(L, i);
  if (!(v >= 0)) luaL_error(L, "field '%s' must be a non-negative number", k);
  return v > AE_LIMIT_SECONDS * 1e6 ? AE_LIMIT_SECONDS * 1e6 : v;
}

static long ms_at(lua_State *L, int i, const char *k) {
  lua_Number v = nonneg_at(L, i, k);
  long ms;
  if (v > AE_LIMIT_SECONDS) v = AE_LIMIT_SECONDS;
  ms = (long)(v * 1000 + 0.5);
  return (v > 0 && ms == 0) ? 1 : ms;
}

static int bool_at(lua_State *L, int i, const char *k) {
  if (lua_type(L, i) != LUA_TBOOLEAN) luaL_error(L, "field '%s' must be a boolean", k);
  return lua_toboolean(L, i);
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

/* libcurl's and this module's defaults, before any session defaults. */
static void xopts_init(xopts *x) {
  memset(x, 0, sizeof *x);
  x->connect_ms = (long)(DEFAULT_CONNECT_TIMEOUT * 1000);
  x->low_speed_limit = 1;
  x->max_size = (curl_off_t)DEFAULT_MAX_RESPONSE;
  x->gzip = 1;
  x->http_version = CURL_HTTP_VERSION_2TLS;
}

/* Overlay the options present among the collected fields at `b` on *x. */
static void read_options(lua_State *L, int b, xopts *x) {
  const char *hv;
  if (!lua_isnil(L, b + F_CAFILE)) x->cafile = cstr_at(L, b + F_CAFILE, "cafile", NULL);
  if (!lua_isnil(L, b + F_CAPATH)) x->capath = cstr_at(L, b + F_CAPATH, "capath", NULL);
  if (!lua_isnil(L, b + F_PROXY)) x->proxy = cstr_at(L, b + F_PROXY, "proxy", NULL);
  if (!lua_isnil(L, b + F_USER_AGENT))
    x->user_agent = cstr_at(L, b + F_USER_AGENT, "user_agent", NULL);
  if (!lua_isnil(L, b + F_CONNECT_TIMEOUT))
    x->connect_ms = ms_at(L, b + F_CONNECT_TIMEOUT, "connect_timeout");
  if (!lua_isnil(L, b + F_TIMEOUT)) x->timeout_ms = ms_at(L, b + F_TIMEOUT, "timeout");
  if (!lua_isnil(L, b + F_LOW_SPEED_TIME))
    x->low_speed_time = (ms_at(L, b + F_LOW_SPEED_TIME, "low_speed_time") + 999) / 1000;
  if (!lua_isnil(L, b + F_LOW_SPEED_LIMIT))
    x->low_speed_limit = (long)nonneg_at(L, b + F_LOW_SPEED_LIMIT, "low_speed_limit");
  if (!lua_isnil(L, b + F_MAX_SIZE))
    x->max_size = (curl_off_t)nonneg_at(L, b + F_MAX_SIZE, "max_response_size");
  if (!lua_isnil(L, b + F_INSECURE)) x->insecure = bool_at(L, b + F_INSECURE, "insecure");
  if (!lua_isnil(L, b + F_GZIP)) x->gzip = bool_at(L, b + F_GZIP, "gzip");
  hv = cstr_at(L, b + F_HTTP_VERSION, "http_version", NULL);
  if (hv != NULL) {
    x->explicit_version = 1;
    if (strcmp(hv, "1.0") == 0) x->http_version = CURL_HTTP_VERSION_1_0;
    else if (strcmp(hv, "1.1") == 0) x->http_version = CURL_HTTP_VERSION_1_1;
    else if (strcmp(hv, "2") == 0) x->http_version = CURL_HTTP_VERSION_2TLS;
    else luaL_error(L, "field 'http_version' must be \"1.0\", \"1.1\" or \"2\"");
  }
}

/* The header line of the entry at -2 (key), -1 (value) of a lua_next walk,
 * written NUL-terminated to dst unless dst is NULL (then only checked).
 * Returns its size with the NUL.
 * Map form: name -> string|number (an empty string sends an empty header).
 * Array form: "Name: value" strings, passed to libcurl as they are, so
 * "Name:" removes a header libcurl would add. */
static size_t header_line(lua_State *L, char *dst) {
  size_t klen, vlen, need;
  const char *k, *v;
  int vt = lua_type(L, -1), copied = 0;
  if (lua_type(L, -2) == LUA_TNUMBER) {
    if (vt != LUA_TSTRING)
      luaL_error(L, "field 'headers' array entries must be \"Name: value\" strings");
    v = lua_tolstring(L, -1, &vlen);
    if (vlen == 0 || ae_has_ctl(v, vlen))
      luaL_error(L, "field 'headers' entry must be a non-empty line without CR, LF or NUL");
    if (dst) memcpy(dst, v, vlen + 1);
    return vlen + 1;
  }
  if (lua_type(L, -2) != LUA_TSTRING)
    luaL_error(L, "field 'headers' keys must be header names or array indices");
  k = lua_tolstring(L, -2, &klen);
  if (!is_token(k, klen)) luaL_error(L, "field 'headers' has an invalid header name '%s'", k);
  if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
    luaL_error(L, "field 'headers' value of '%s' must be a string or a number", k);
  if (vt == LUA_TNUMBER) { /* convert a copy, never the table's value */
    lua_pushvalue(L, -1);
    copied = 1;
  }
  v = lua_tolstring(L, -1, &vlen);
  if (ae_has_ctl(v, vlen)) luaL_error(L, "field 'headers' value of '%s' contains CR, LF or NUL", k);
  need = klen + (vlen ? 2 + vlen : 1) + 1; /* "Name: value" or "Name;" (libcurl's empty header) */
  if (dst) {
    memcpy(dst, k, klen);
    if (vlen) {
      dst[klen] = ':';
      dst[klen + 1] = ' ';
      memcpy(dst + klen + 2, v, vlen);
    } else {
      dst[klen] = ';';
    }
    dst[need - 1] = '\0';
  }
  if (copied) lua_pop(L, 1);
  return need;
}

/* The header lines of the table at stack index t, as one block of
 * NUL-terminated lines in buf (or, when larger, a userdata left on the stack). */
static void read_headers(lua_State *L, int t, reqopts *o, char *buf, size_t bufsize) {
  size_t total = 0, n = 0;
  char *out;
  o->hblock = NULL;
  o->hlen = 0;
  if (lua_isnil(L, t)) return;
  if (lua_type(L, t) == LUA_TUSERDATA) { /* core.http_headers: checked when made */
    hset *hs = (hset *)luaL_testudata(L, t, HEADERS_MT);
    if (hs == NULL) luaL_error(L, "field 'headers' must be a table or a core.http_headers set");
    o->hblock = hs->block;
    o->hlen = hs->len;
    return;
  }
  if (!lua_istable(L, t)) luaL_error(L, "field 'headers' must be a table");
  lua_pushnil(L); /* first pass: check every entry, size the block */
  while (lua_next(L, t) != 0) {
    total += header_line(L, NULL);
    lua_pop(L, 1);
  }
  if (total == 0) return;
  out = total <= bufsize ? buf : (char *)lua_newuserdatauv(L, total, 0);
  lua_pushnil(L); /* second pass: write (same table, nothing ran in between) */
  while (lua_next(L, t) != 0) {
    if (n < total) n += header_line(L, out + n);
    lua_pop(L, 1);
  }
  o->hblock = out;
  o->hlen = n;
}

#define HEADER_BUF 1024

/* core.http_headers(t): header lines checked and formatted once, for a
 * caller that sends the same ones many times (the client's transport). An
 * immutable value usable as a request's `headers`. */
static int l_http_headers(lua_State *L) {
  reqopts o;
  char buf[HEADER_BUF];
  hset *hs;
  luaL_checktype(L, 1, LUA_TTABLE);
  read_headers(L, 1, &o, buf, sizeof buf);
  hs = (hset *)lua_newuserdatauv(L, offsetof(hset, block) + (o.hlen ? o.hlen : 1), 0);
  hs->len = o.hlen;
  if (o.hlen) memcpy(hs->block, o.hblock, o.hlen);
  luaL_getmetatable(L, HEADERS_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static void read_request(lua_State *L, session *s, int idx, reqopts *o, char *hbuf) {
  size_t len;
  int b;
  luaL_checktype(L, idx, LUA_TTABLE);
  b = collect_fields(L, idx);
  o->method = cstr_at(L, b + F_METHOD, "method", &len);
  if (o->method == NULL) o->method = "GET";
  else if (!is_token(o->method, len)) luaL_error(L, "field 'method' must be an HTTP method name");
  o->url = cstr_at(L, b + F_URL, "url", NULL);
  o->url_idx = b + F_URL;
  if (o->url == NULL) luaL_error(L, "field 'url' is required (a string)");
  o->body = str_at(L, b + F_BODY, "body", &o->body_len);
  o->x = s->defaults;
  read_options(L, b, &o->x);
  o->fresh = lua_isnil(L, b + F_FRESH) ? 0 : bool_at(L, b + F_FRESH, "fresh_connect");
  read_headers(L, b + F_HEADERS, o, hbuf, HEADER_BUF);
}

/* ---- starting a transfer (no Lua errors from here on) -------------------- */

#define SETOPT(opt, val)                                                                           \
  do {                                                                                             \
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val);                                        \
  } while (0)

/* The options that stay with a handle from one request to the next. */
static CURLcode set_options(CURL *e, const xopts *o) {
  CURLcode rc = CURLE_OK;
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
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
  if (o->proxy) SETOPT(CURLOPT_PROXY, o->proxy);
  if (o->user_agent) SETOPT(CURLOPT_USERAGENT, o->user_agent);
  if (rc == CURLE_OK) {
    CURLcode v = curl_easy_setopt(e, CURLOPT_HTTP_VERSION, o->http_version);
    if (o->explicit_version) rc = v; /* the default may be unsupported: fine */
  }
  return rc;
}

/* The method and body. `sticky` 0: the handle already carries this method's
 * options from its last transfer, so only the body is set again. */
static CURLcode set_method(CURL *e, const reqopts *o, int sticky) {
  CURLcode rc = CURLE_OK;
  const char *m = o->method;
  if (strcmp(m, "HEAD") == 0) {
    if (sticky) SETOPT(CURLOPT_NOBODY, 1L);
  } else if (strcmp(m, "GET") == 0 && o->body == NULL) {
    if (sticky) SETOPT(CURLOPT_HTTPGET, 1L);
  } else {
    if (sticky && strcmp(m, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, m);
    if (o->body != NULL || strcmp(m, "POST") == 0) {
      /* size first: COPYPOSTFIELDS copies that many bytes (NUL-safe) */
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
      SETOPT(CURLOPT_COPYPOSTFIELDS, o->body ? o->body : "");
    }
  }
  return rc;
}

/* Point the handle's header list at the request's lines, rebuilding it only
 * when they changed since its last transfer. */
static CURLcode set_headers(ehandle *h, const reqopts *o) {
  struct curl_slist *list = NULL;
  char *copy = NULL;
  /* hlen 0 means no lines (hblock may then be NULL: no arithmetic on it) */
  const char *p = o->hblock, *end = o->hlen > 0 ? o->hblock + o->hlen : o->hblock;
  CURLcode rc;
  if (o->hlen > 0 && h->hblock != NULL && h->hlen == o->hlen &&
      memcmp(h->hblock, o->hblock, o->hlen) == 0)
    return CURLE_OK;
  if (h->hblock == NULL && h->hlen == 1 && o->hlen == 0) return CURLE_OK; /* none, already */
  for (; p < end; p += strlen(p) + 1) {
    struct curl_slist *l = curl_slist_append(list, p);
    if (l == NULL) {
      curl_slist_free_all(list);
      return CURLE_OUT_OF_MEMORY;
    }
    list = l;
  }
  rc = curl_easy_setopt(h->e, CURLOPT_HTTPHEADER, list);
  if (rc != CURLE_OK) {
    curl_slist_free_all(list);
    return rc;
  }
  curl_slist_free_all(h->headers);
  free(h->hblock);
  h->headers = list;
  h->hblock = NULL;
  h->hlen = 0;
  if (o->hlen == 0) {
    h->hlen = 1; /* marks "no headers, set" */
  } else if ((copy = (char *)malloc(o->hlen)) != NULL) {
    memcpy(copy, o->hblock, o->hlen);
    h->hblock = copy;
    h->hlen = o->hlen;
  } /* else: not remembered, rebuilt next time */
  return CURLE_OK;
}

static CURLcode xfer_setopts(xfer *x, const reqopts *o) {
  ehandle *h = x->easy;
  CURL *e = h->e;
  CURLcode rc = CURLE_OK;
  size_t mlen = strlen(o->method);
  int has_body = o->body != NULL;
  if (h->tuned && h->has_body == has_body && strcmp(h->method, o->method) == 0 &&
      xopts_equal(&h->x, &o->x)) {
    rc = set_method(e, o, 0);
  } else {
    ehandle_untune(h);
    curl_easy_reset(e);
    rc = set_options(e, &o->x);
    if (rc == CURLE_OK) rc = set_method(e, o, 1);
    if (rc == CURLE_OK && mlen < sizeof h->method && xopts_copy(&h->x, &o->x) == 0) {
      memcpy(h->method, o->method, mlen + 1);
      h->has_body = has_body;
      h->tuned = 1;
    }
  }
  SETOPT(CURLOPT_URL, o->url);
  SETOPT(CURLOPT_PRIVATE, (void *)x);
  SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
  SETOPT(CURLOPT_WRITEDATA, (void *)x);
  SETOPT(CURLOPT_HEADERDATA, (void *)x);
  /* libcurl silently re-sends a request whose reused connection died before
   * any answer; for a request that creates something that could create it
   * twice, so such requests ask for a connection of their own. */
  SETOPT(CURLOPT_FRESH_CONNECT, o->fresh ? 1L : 0L);
  if (rc == CURLE_OK) rc = set_headers(h, o);
  return rc;
}

/* Start a transfer, or push nil, err and return NULL. */
static xfer *xfer_start(lua_State *L, session *s, const reqopts *o) {
  CURLcode rc = CURLE_OUT_OF_MEMORY;
  const char *why = NULL;
  CURLMcode mc;
  xfer *x = (xfer *)calloc(1, sizeof *x);
  if (x != NULL) x->easy = pool_get(s);
  if (x == NULL || x->easy == NULL) goto fail;
  x->max_size = o->x.max_size;
  ae_buf_init(&x->body, (size_t)x->max_size); /* 0: no limit */
  ae_buf_init(&x->head, MAX_HEADER_BYTES);
  rc = xfer_setopts(x, o);
  if (rc != CURLE_OK) goto fail;
  mc = curl_multi_add_handle(s->multi, x->easy->e);
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
    if (x->easy) {
      ehandle_untune(x->easy); /* in an unknown state: reset at its next use */
      pool_put(s, x->easy);
    }
    xfer_free(x);
  }
  luaL_pushfail(L);
  push_error(L, "other", why ? why : curl_easy_strerror(rc), (lua_Integer)rc);
  return NULL;
}

/* ---- driving the multi handle -------------------------------------------- */

/* Perform, collect, and wait for activity until the deadline, a completion
 * (when `until` is NULL) or the completion of `until`. */
static CURLMcode drive(session *s, double deadline, xfer *until, struct curl_waitfd *extra,
                       unsigned nextra, int short_wait) {
  for (;;) {
    int running;
    double left;
    CURLMcode mc = curl_multi_perform(s->multi, &running);
    if (mc != CURLM_OK) return mc;
    collect(s);
    if (until ? until->done : (s->done != NULL)) return CURLM_OK;
    if (s->active == NULL && nextra == 0 && !short_wait) return CURLM_OK;
    left = deadline - ae_clock_mono();
    if (left <= 0) return CURLM_OK;
    left = left * 1000 + 1;
    if (short_wait && left > 10) left = 10; /* a WebSocket with no socket to name yet */
    mc = curl_multi_poll(s->multi, extra, nextra, left > INT_MAX ? INT_MAX : (int)left, NULL);
    if (mc != CURLM_OK) return mc;
    if (short_wait) {
      mc = curl_multi_perform(s->multi, &running);
      if (mc == CURLM_OK) collect(s);
      return mc;
    }
    if (nextra > 0) { /* an extra descriptor is ready: back to the caller */
      unsigned i;
      for (i = 0; i < nextra; i++) {
        if (!extra[i].revents) continue;
        mc = curl_multi_perform(s->multi, &running);
        if (mc == CURLM_OK) collect(s);
        return mc;
      }
    }
  }
}

/* ---- methods -------------------------------------------------------------- */

static session *check_session(lua_State *L) {
  return (session *)luaL_checkudata(L, 1, SESSION_MT);
}

static int s_start(lua_State *L) {
  session *s = check_session(L);
  reqopts o;
  char hbuf[HEADER_BUF];
  xfer *x;
  if (s->multi == NULL) return push_closed(L);
  read_request(L, s, 2, &o, hbuf);
  x = xfer_start(L, s, &o);
  if (x == NULL) return 2;
  lua_pushinteger(L, x->id);
  return 1;
}

static int s_request(lua_State *L) {
  session *s = check_session(L);
  reqopts o;
  char hbuf[HEADER_BUF];
  xfer *x;
  CURLMcode mc;
  if (s->multi == NULL) return push_closed(L);
  read_request(L, s, 2, &o, hbuf);
  x = xfer_start(L, s, &o);
  if (x == NULL) return 2;
  x->url_idx = o.url_idx;
  do {
    mc = drive(s, ae_clock_mono() + 3600, x, NULL, 0, 0);
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
  struct curl_waitfd local[16], *extra = local;
  unsigned nextra = 0;
  int short_wait = 0;
  luaL_argcheck(L, t >= 0, 2, "timeout must be a non-negative number");
  if (!lua_isnoneornil(L, 3)) { /* extra fds / WebSockets to wait on as well */
    int i, n;
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (int)lua_rawlen(L, 3);
    if (n > 16) extra = lua_newuserdatauv(L, sizeof *extra * (size_t)n, 0);
    for (i = 1; i <= n; i++) {
      struct pollfd p;
      lua_rawgeti(L, 3, i);
      if (ae_waitfd_item(L, -1, &p)) { /* raises on a wrong entry: nothing held yet */
        extra[nextra].fd = p.fd;
        extra[nextra].events = (short)((p.events & POLLIN ? CURL_WAIT_POLLIN : 0) |
                                       (p.events & POLLOUT ? CURL_WAIT_POLLOUT : 0));
        extra[nextra].revents = 0;
        nextra++;
      } else {
        short_wait = 1;
      }
      lua_pop(L, 1);
    }
  }
  if (s->multi == NULL) return push_closed(L);
  mc = drive(s, ae_clock_mono() + (t > AE_LIMIT_SECONDS ? AE_LIMIT_SECONDS : t), NULL, extra,
             nextra, short_wait);
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

/* core.http_session(opts?): opts.max_idle, opts.defaults (request options
 * every request of the session gets unless it sets its own). */
/* Easy handles are pooled only on a libcurl that unfolds headers before
 * keeping them (8.18.0): older ones keep a pointer to a freed header across
 * transfers on one handle and read it when the next answer starts with a
 * folded line (a heap use-after-free that fuzz/fuzz_http_response found on
 * Debian 12's 7.88.1). Connections are kept alive by the multi handle either
 * way; only curl_easy_init per request is lost. */
static int default_max_idle(void) {
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  return (v && v->version_num >= 0x081200) ? DEFAULT_MAX_IDLE : 0;
}

static int l_http_session(lua_State *L) {
  lua_Number max_idle = default_max_idle();
  xopts d;
  session *s;
  xopts_init(&d);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    max_idle = ae_optnumfield(L, 1, "max_idle", max_idle);
    if (!(max_idle >= 0 && max_idle <= LIMIT_MAX_IDLE) || max_idle != (lua_Number)(int)max_idle)
      luaL_error(L, "field 'max_idle' must be an integer between 0 and %d", LIMIT_MAX_IDLE);
    lua_getfield(L, 1, "defaults");
    if (!lua_isnil(L, -1)) {
      int b, f;
      if (!lua_istable(L, -1)) luaL_error(L, "field 'defaults' must be a table");
      b = collect_fields(L, lua_gettop(L));
      for (f = 0; f < F_FIRST_OPTION; f++)
        if (!lua_isnil(L, b + f))
          luaL_error(L, "field 'defaults' cannot hold '%s' (it belongs to each request)",
                     field_names[f]);
      read_options(L, b, &d); /* its strings stay on the stack until copied */
    }
  }
  s = (session *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s); /* closed until the multi handle exists */
  luaL_getmetatable(L, SESSION_MT);
  lua_setmetatable(L, -2);
  if (xopts_copy(&s->defaults, &d) != 0) goto fail;
  if (max_idle > 0) {
    s->idle = (ehandle **)calloc((size_t)max_idle, sizeof *s->idle);
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
    {"request", s_request}, {"start", s_start}, {"poll", s_poll}, {"pending", s_pending},
    {"cancel", s_cancel},   {"close", s_close}, {NULL, NULL},
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
  if (luaL_newmetatable(L, HEADERS_MT)) {
    lua_pushliteral(L, "analytics_engine.HttpHeaders");
    lua_setfield(L, -2, "__metatable"); /* no getmetatable games with a checked value */
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_http_headers);
  lua_setfield(L, -2, "http_headers");
  if (luaL_newmetatable(L, RESPONSE_MT)) {
    lua_pushcfunction(L, res_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_http_session);
  lua_setfield(L, -2, "http_session");
}

/* The HTTP client: reading a request table (or a session's defaults) into C
 * values, which may raise and holds no C resources; then setting them on an
 * easy handle, which never raises. A handle keeps the options it was set up
 * with, so the next request with the same ones skips curl_easy_reset. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"

void http_xopts_free(xopts *x) {
  free((char *)x->cafile);
  free((char *)x->capath);
  free((char *)x->proxy);
  free((char *)x->user_agent);
  x->cafile = x->capath = x->proxy = x->user_agent = NULL;
}

/* dst = src with copies of its strings; -1 (dst holding no strings) on OOM. */
int http_xopts_copy(xopts *dst, const xopts *src) {
  *dst = *src;
  dst->cafile = src->cafile ? strdup(src->cafile) : NULL;
  dst->capath = src->capath ? strdup(src->capath) : NULL;
  dst->proxy = src->proxy ? strdup(src->proxy) : NULL;
  dst->user_agent = src->user_agent ? strdup(src->user_agent) : NULL;
  if ((src->cafile && !dst->cafile) || (src->capath && !dst->capath) ||
      (src->proxy && !dst->proxy) || (src->user_agent && !dst->user_agent)) {
    http_xopts_free(dst);
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
void http_ehandle_untune(ehandle *h) {
  http_xopts_free(&h->x);
  curl_slist_free_all(h->headers);
  h->headers = NULL;
  free(h->hblock);
  h->hblock = NULL;
  h->hlen = 0;
  h->tuned = 0;
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
  F_ONCE,
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
    "method",          "url",     "body",           "headers",         "fresh_connect",
    "send_once",       "cafile",  "capath",         "proxy",           "user_agent",
    "connect_timeout", "timeout", "low_speed_time", "low_speed_limit", "max_response_size",
    "insecure",        "gzip",    "http_version",
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
void http_xopts_init(xopts *x) {
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

/* core.http_headers(t): header lines checked and formatted once, for a
 * caller that sends the same ones many times (the client's transport). An
 * immutable value usable as a request's `headers`. */
int http_l_headers(lua_State *L) {
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

void http_read_request(lua_State *L, session *s, int idx, reqopts *o, char *hbuf) {
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
  o->once = lua_isnil(L, b + F_ONCE) ? 0 : bool_at(L, b + F_ONCE, "send_once");
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
  SETOPT(CURLOPT_WRITEFUNCTION, http_on_body);
  SETOPT(CURLOPT_HEADERFUNCTION, http_on_header);
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

/* How a request's body is given to libcurl (ehandle.has_body). */
enum { BODY_NONE, BODY_COPIED, BODY_READ };

static int body_mode(const reqopts *o) {
  if (o->body == NULL && strcmp(o->method, "POST") != 0) return BODY_NONE;
  return o->once ? BODY_READ : BODY_COPIED;
}

/* send_once: libcurl reads the body through this callback, and with no seek
 * callback it cannot rewind it. libcurl silently sends a request again when
 * its reused connection died before any answer, rewinding the body; for such
 * a request that rewind fails and so does the transfer (CURLE_SEND_FAIL_REWIND),
 * where the server may have acted on the first: it is said, not repeated. */
static size_t on_upload(char *buf, size_t size, size_t nitems, void *ud) {
  xfer *x = (xfer *)ud;
  size_t room = size * nitems, left = x->upload_len - x->upload_off;
  if (room > left) room = left;
  memcpy(buf, x->upload + x->upload_off, room);
  x->upload_off += room;
  return room;
}

/* The method and body. `sticky` 0: the handle already carries this method's
 * options from its last transfer, so only the body is set again. */
static CURLcode set_method(xfer *x, CURL *e, const reqopts *o, int sticky) {
  CURLcode rc = CURLE_OK;
  const char *m = o->method;
  int mode = body_mode(o);
  if (strcmp(m, "HEAD") == 0) {
    if (sticky) SETOPT(CURLOPT_NOBODY, 1L);
  } else if (strcmp(m, "GET") == 0 && o->body == NULL) {
    if (sticky) SETOPT(CURLOPT_HTTPGET, 1L);
  } else {
    if (sticky && strcmp(m, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, m);
    if (mode == BODY_READ) {
      if (sticky) {
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_READFUNCTION, on_upload);
        /* libcurl's smallest: its 64 KB default, per handle, grew a
         * 10,000-submission run by ~6 MB for bodies of a few hundred bytes */
        SETOPT(CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
      }
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->upload_len);
      SETOPT(CURLOPT_READDATA, (void *)x);
    } else if (mode == BODY_COPIED) {
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

CURLcode http_xfer_setopts(xfer *x, const reqopts *o) {
  ehandle *h = x->easy;
  CURL *e = h->e;
  CURLcode rc = CURLE_OK;
  size_t mlen = strlen(o->method);
  int has_body = body_mode(o);
  if (has_body == BODY_READ) { /* the transfer's own copy: read while it runs */
    x->upload = (char *)malloc(o->body_len ? o->body_len : 1);
    if (x->upload == NULL) return CURLE_OUT_OF_MEMORY;
    if (o->body_len) memcpy(x->upload, o->body, o->body_len);
    x->upload_len = o->body_len;
    x->upload_off = 0;
  }
  if (h->tuned && h->has_body == has_body && strcmp(h->method, o->method) == 0 &&
      xopts_equal(&h->x, &o->x)) {
    rc = set_method(x, e, o, 0);
  } else {
    http_ehandle_untune(h);
    curl_easy_reset(e);
    rc = set_options(e, &o->x);
    if (rc == CURLE_OK) rc = set_method(x, e, o, 1);
    if (rc == CURLE_OK && mlen < sizeof h->method && http_xopts_copy(&h->x, &o->x) == 0) {
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
   * twice, so such requests ask for a connection of their own. It is closed
   * after the answer: kept, it would only idle in the cache until the server
   * closed it (10,000 creates left 10,000 dead connections for later
   * requests to find and close). */
  SETOPT(CURLOPT_FRESH_CONNECT, o->fresh ? 1L : 0L);
  SETOPT(CURLOPT_FORBID_REUSE, o->fresh ? 1L : 0L);
  if (rc == CURLE_OK) rc = set_headers(h, o);
  return rc;
}

/* A session's `defaults` table at idx: options only. Its strings stay on the
 * stack (above idx) until the caller has copied them. */
void http_read_defaults(lua_State *L, int idx, xopts *d) {
  int b, f;
  if (!lua_istable(L, idx)) luaL_error(L, "field 'defaults' must be a table");
  b = collect_fields(L, idx);
  for (f = 0; f < F_FIRST_OPTION; f++)
    if (!lua_isnil(L, b + f))
      luaL_error(L, "field 'defaults' cannot hold '%s' (it belongs to each request)",
                 field_names[f]);
  read_options(L, b, d);
}

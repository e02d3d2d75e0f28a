/* The HTTP client's results: libcurl's write callbacks fill a transfer's
 * buffers (no Lua in them), and a finished transfer becomes a response table
 * or an error table. */
#include <stdio.h>
#include <string.h>

#include "http.h"

/* ---- libcurl callbacks (no Lua in here) ---------------------------------- */

size_t http_on_body(char *p, size_t size, size_t nmemb, void *ud) {
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
size_t http_on_header(char *p, size_t size, size_t nmemb, void *ud) {
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

void http_push_error(lua_State *L, const char *kind, const char *message, lua_Integer code) {
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

/* What kind of failure a libcurl result is, in the words the Lua side uses
 * (errors.lua; the WebSocket client's errors too). */
const char *ae_curl_kind(int rc) {
  switch ((CURLcode)rc) {
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
  case CURLE_SEND_ERROR:
  case CURLE_SEND_FAIL_REWIND: return "send";
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE: return "recv";
  case CURLE_ABORTED_BY_CALLBACK: return "aborted";
  default: return "other";
  }
}

static const char *error_kind(const xfer *x) {
  if (x->switched) return "protocol";
  if (x->too_large || header_overflow(x)) return "too_large";
  return ae_curl_kind(x->result);
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
  else if (x->result == CURLE_SEND_FAIL_REWIND && x->upload != NULL)
    snprintf(msg, sizeof msg,
             "the connection closed before an answer; the request was not sent again "
             "(send_once)");
  else if (n > 0) snprintf(msg, sizeof msg, "%s: %s", curl_easy_strerror(x->result), x->errbuf);
  else snprintf(msg, sizeof msg, "%s", curl_easy_strerror(x->result));
  http_push_error(L, kind, msg, (lua_Integer)x->result);
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
int http_res_index(lua_State *L) {
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
int http_push_outcome(lua_State *L, xfer *x) {
  if (x->result == CURLE_OK) {
    push_response(L, x);
    return 1;
  }
  push_transfer_error(L, x);
  return 0;
}

int http_push_closed(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "closed");
  return 2;
}

int http_push_multi_error(lua_State *L, CURLMcode mc) {
  char msg[256];
  snprintf(msg, sizeof msg, "curl multi: %s", curl_multi_strerror(mc));
  luaL_pushfail(L);
  http_push_error(L, "other", msg, 0);
  return 2;
}

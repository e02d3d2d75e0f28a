/* The WebSocket client: libcurl CONNECT_ONLY does DNS, TCP, proxy CONNECT
 * and TLS without blocking; the Upgrade handshake is ours (Sec-WebSocket-Key
 * from getrandom, Sec-WebSocket-Accept checked), then ws_frame.c carries the
 * frames over curl_easy_send/recv. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ws_frame.h"

#define DEFAULT_CONNECT_TIMEOUT 10.0
#define MAX_HANDSHAKE 16384 /* bytes of the server's 101 response head */

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
      ws_fail_curl(w, "websocket connect", rc);
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
  while (w->out_off < w->out.len) {
    ssize_t n = ws_io_send(w, w->out.p + w->out_off, w->out.len - w->out_off);
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
    size_t n = w->in.len - w->in_off;
    w->err_status = status;
    if (n > 4096) n = 4096;
    if (n > 0 && (w->err_body = malloc(n)) != NULL) {
      memcpy(w->err_body, w->in.p + w->in_off, n);
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
  if (ws_make_ctx(w) != 0) {
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
    if (ae_buf_reserve(&w->in, 1024) != 0) {
      ws_fail(w, "other", "websocket handshake: out of memory");
      return;
    }
    n = ws_io_recv(w, ae_buf_end(&w->in), ae_buf_room(&w->in));
    if (n == -1 || n == -2) return;
    if (n == 0) {
      ws_fail(w, "handshake", "websocket handshake: the server closed the connection");
      return;
    }
    ae_buf_added(&w->in, (size_t)n);
    end = strstr(w->in.p, "\r\n\r\n");
    if (end) {
      size_t hlen = (size_t)(end - w->in.p) + 4;
      w->in_off = hlen; /* what follows is the first frames (or an error body) */
      check_response(w, w->in.p, hlen);
      return;
    }
    if (w->in.len > MAX_HANDSHAKE) {
      ws_fail(w, "handshake", "websocket handshake: response head exceeds %d bytes", MAX_HANDSHAKE);
      return;
    }
  }
}

void ws_client_step(ae_ws *w) {
  if (w->state == WS_CONNECTING) step_connect(w);
  if (w->state == WS_HS_SEND) step_hs_send(w);
  if (w->state == WS_HS_RECV) step_hs_recv(w);
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
      if (kl == 0 || ae_has_ctl(k, kl) || memchr(k, ':', kl) || memchr(k, ' ', kl) ||
          ae_has_ctl(v, vl))
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
int ws_l_connect(lua_State *L) {
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
  if (ae_has_ctl(url, strlen(url)) || strchr(url, ' '))
    return luaL_argerror(L, 1, "URL has spaces or controls");
  cafile = ae_optstrfield(L, 2, "cafile", NULL);
  capath = ae_optstrfield(L, 2, "capath", NULL);
  proxy = ae_optstrfield(L, 2, "proxy", NULL);
  insecure = ae_optboolfield(L, 2, "insecure", 0);
  control = ae_optboolfield(L, 2, "control_frames", 0);
  connect_timeout = ae_optnumfield(L, 2, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
  luaL_argcheck(L, connect_timeout >= 0, 2, "connect_timeout must be >= 0");
  max_msg = ws_opt_max_msg(L, 2);

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

  if (ae_random_fill(raw, sizeof raw) != 0) return luaL_error(L, "getrandom: %s", strerror(errno));
  ae_base64(raw, sizeof raw, key);
  ae_ws_accept_key(key, strlen(key), accept);
  build_request(L, 2, lua_tostring(L, 6), lua_tostring(L, 5), key); /* 7 */
  head = lua_tolstring(L, 7, &head_len);

  /* From here on: no raising until the handle owns what it allocates. */
  w = ws_new_handle(L, max_msg, control); /* 8 */
  memcpy(w->accept, accept, sizeof accept);
  /* The head may not pass MAX_HANDSHAKE, but frames can follow it in the
   * same read: the buffer itself only bounds the memory. */
  ae_buf_init(&w->in, 2 * MAX_HANDSHAKE);
  w->multi = curl_multi_init();
  w->easy = curl_easy_init();
  if (ae_buf_add(&w->out, head, head_len) != 0 || !w->multi || !w->easy) {
    setup_fail(L, w, "websocket: out of memory");
    return 2;
  }
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

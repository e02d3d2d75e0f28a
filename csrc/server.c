/* analytics_engine.core http_server: libmicrohttpd driven from the Lua thread.
 *
 * One Lua state, one thread. The daemon has no thread of its own: poll()
 * waits on its epoll descriptor and runs it (MHD_run_wait). The access
 * handler, which only ever runs inside that call, collects a complete
 * request into C memory, queues it and suspends the connection; poll()
 * hands the queued requests to Lua. respond() attaches a response and
 * resumes the connection; the next run calls the handler again, which
 * queues the response. So an answer can be given at any later time, in any
 * order, and no libmicrohttpd callback ever calls into Lua.
 *
 * Two things libmicrohttpd 0.9.75 does not do itself are done here: it
 * closes a connection on reading end-of-file even after the whole request
 * arrived (so a client that half-closes after its request lost the answer;
 * see park below), and it accepts ambiguous message framing (Content-Length
 * with Transfer-Encoding, differing Content-Lengths, codings other than
 * chunked), which lets a request be smuggled behind a proxy (server_framing.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

/* ---------------------------------------------------------------- requests */

static request *req_new(server *s) {
  request *r = s->free_list;
  if (r) {
    s->free_list = r->next;
    s->nfree--;
  } else {
    r = malloc(sizeof *r);
    if (!r) return NULL;
    ae_buf_init(&r->body, s->max_body);
  }
  r->next = NULL;
  r->ent = NULL;
  r->conn = NULL;
  r->method = r->path = NULL;
  r->query = r->qbuf;
  r->qbuf[0] = '\0';
  r->qlen = 0;
  ae_buf_reset(&r->body);
  r->resp = NULL;
  r->status = 0;
  r->slot = NO_SLOT;
  r->state = RQ_COLLECTING;
  r->started = r->suspended = r->parked = r->too_large = 0;
  r->all_prev = NULL;
  r->all_next = s->all;
  if (s->all) s->all->all_prev = r;
  s->all = r;
  return r;
}

static void req_free(server *s, request *r) {
  if (r->all_prev) r->all_prev->all_next = r->all_next;
  else s->all = r->all_next;
  if (r->all_next) r->all_next->all_prev = r->all_prev;
  if (r->resp) MHD_destroy_response(r->resp);
  r->resp = NULL;
  if (r->query != r->qbuf) free(r->query);
  r->query = r->qbuf;
  if (r->body.cap > KEEP_BODY) ae_buf_free(&r->body);
  if (s->nfree < KEEP_FREE) {
    r->next = s->free_list;
    s->free_list = r;
    s->nfree++;
  } else {
    ae_buf_free(&r->body);
    free(r);
  }
}

static void ready_unlink(server *s, request *r) {
  request **p = &s->ready_head, *prev = NULL;
  while (*p && *p != r) {
    prev = *p;
    p = &(*p)->next;
  }
  if (!*p) return;
  *p = r->next;
  if (s->ready_tail == r) s->ready_tail = prev;
  r->next = NULL;
}

/* --------------------------------------------------- libmicrohttpd callbacks */

/* Called with the raw request target before MHD splits and parses it: the
 * only place the undecoded query string is available. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  server *s = cls;
  request *r = req_new(s);
  const char *q;
  if (!r) return NULL;
  r->conn = c;
  q = strchr(uri, '?');
  if (q) {
    size_t n = strlen(++q);
    if (n >= sizeof r->qbuf) {
      char *m = malloc(n + 1);
      if (!m) { /* leave the query empty; the handler refuses the request */
        r->too_large = 2;
        return r;
      }
      r->query = m;
    }
    memcpy(r->query, q, n + 1);
    r->qlen = n;
  }
  return r;
}

/* Keep the path as sent (no percent-decoding), like the query. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
  return strlen(s);
}

/* Suspend a connection whose request waits for Lua. */
static void park(server *s, request *r) {
  r->suspended = r->parked = 1;
  s->nsuspended++;
  MHD_suspend_connection(r->conn);
}

/* Resume a parked connection; one not parked yet (see on_request) finds its
 * answer on the next handler call. */
void srv_unpark(request *r) {
  if (r->suspended) MHD_resume_connection(r->conn);
}

/* The request is whole (or refused before its body): queue it for Lua. */
static void hand_to_lua(server *s, request *r, struct MHD_Connection *c) {
  r->state = RQ_READY;
  ae_guard_busy(c);
  r->next = NULL;
  if (s->ready_tail) s->ready_tail->next = r;
  else s->ready_head = r;
  s->ready_tail = r;
}

static AE_MHD_RESULT on_request(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls) {
  server *s = cls;
  request *r = *con_cls;
  if (r && r->suspended) { /* called again after a resume */
    r->suspended = 0;
    s->nsuspended--;
  }
  if (s->closing) return MHD_NO;
  if (!r) {
    r = req_new(s);
    if (!r) return MHD_NO;
    r->conn = c;
    *con_cls = r;
  }
  switch (r->state) {
  case RQ_COLLECTING:
    if (!r->started) {
      const char *cl, *why;
      if (r->too_large == 2) return MHD_NO; /* out of memory in on_uri */
      r->started = 1;
      r->method = method;
      r->path = url;
      why = srv_bad_framing(c, version);
      if (why) {
        r->state = RQ_DROPPED;
        return srv_refuse_framing(c, why);
      }
      cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > s->max_body) {
          /* Refused on the claim, before any of the body is read, instead
           * of after all of it (or never, for a client that stalls). Lua
           * answers (413); parked now, the connection is still where
           * libmicrohttpd takes an early answer: it sends it without
           * reading the body and closes (no 100 Continue either). */
          r->too_large = 1;
          hand_to_lua(s, r, c);
          park(s, r);
          return MHD_YES;
        }
        /* Reserve up front, but not more than a little on a mere claim. */
        if (n > 0 && n <= s->max_body && n <= PRERESERVE_MAX &&
            ae_buf_reserve(&r->body, (size_t)n) != 0)
          return MHD_NO;
      }
      return MHD_YES;
    }
    if (*upload_data_size) {
      size_t n = *upload_data_size;
      *upload_data_size = 0;
      if (!r->too_large) {
        int rc = ae_buf_add(&r->body, upload_data, n);
        if (rc == AE_BUF_TOOBIG) {
          r->too_large = 1;
          ae_buf_reset(&r->body);
        } else if (rc != 0) {
          return MHD_NO;
        }
      }
      return MHD_YES;
    }
    /* The request is complete. A GET whose answer Lua let the server keep
     * for this path and Authorization value is answered here, without Lua
     * (server_cache.c); only a request with no query and no body. */
    if (s->answers.n && !r->too_large && r->qlen == 0 && r->body.len == 0 &&
        strcmp(method, "GET") == 0) {
      unsigned int status;
      struct MHD_Response *resp = srv_answer_lookup(s, c, url, &status);
      if (resp) {
        r->state = RQ_ANSWERED;
        ae_guard_busy(c);
        return MHD_queue_response(c, status, resp);
      }
    }
    /* Otherwise hand it to Lua, but do not suspend yet.
     * libmicrohttpd keeps the connection's "wants to read" mark while it is
     * suspended and reads right after the resume: a client that half-closed
     * then reads as end-of-file and libmicrohttpd closes the connection
     * before the answer is written. Returning without a response lets it
     * mark the connection as waiting for the application (no reading); it
     * calls again on its next run, and that call suspends. */
    hand_to_lua(s, r, c);
    return MHD_YES;
  case RQ_READY:
  case RQ_PENDING: /* the call after the request completed: park it now */
    park(s, r);
    return MHD_YES;
  case RQ_ANSWERED:
    if (!r->parked) {
      /* Answered before it was parked. Park and resume at once all the
       * same: the resume is what makes libmicrohttpd look at the socket
       * again (its epoll is edge-triggered), so a client's end-of-file that
       * came with the request is seen after the answer and the connection
       * closes instead of idling to its timeout. */
      park(s, r);
      MHD_resume_connection(c);
      return MHD_YES;
    }
    if (r->resp) {
      AE_MHD_RESULT ret = MHD_queue_response(c, r->status, r->resp);
      MHD_destroy_response(r->resp);
      r->resp = NULL;
      return ret;
    }
    return MHD_NO;
  default: /* RQ_DROPPED, or anything unexpected: close the connection */ return MHD_NO;
  }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  server *s = cls;
  ae_guard_notify(&s->guard, c, socket_context, code == MHD_CONNECTION_NOTIFY_CLOSED);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  server *s = cls;
  request *r = *con_cls;
  if (!r) return;
  *con_cls = NULL;
  if (!r->ent) ae_guard_idle(&s->guard, c);
  if (r->ent) {
    wsent *e = r->ent;
    r->ent = NULL;
    e->r = NULL;
    if (!e->urh && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) { /* no upgrade will come */
      if (e->w) {
        ae_ws_fail_upgrade(e->w, "the connection closed before the upgrade");
        e->news = 1;
      } else {
        srv_ent_free(s, e);
      }
    }
  }
  if (r->suspended) {
    r->suspended = 0;
    s->nsuspended--;
  }
  if (r->state == RQ_READY) {
    ready_unlink(s, r);
  } else if (r->state == RQ_PENDING) {
    srv_slot_release(s, r, 1);
    s->pending--;
  }
  req_free(s, r);
}

/* ------------------------------------------------------------------ the server */

static void server_shutdown(lua_State *L, server *s) {
  request *r, *n;
  int i;
  while (s->ws) { /* close every WebSocket first: MHD must not find them open */
    wsent *e = s->ws;
    if (e->w) {
      ae_ws_orphan(e->w);
      luaL_unref(L, LUA_REGISTRYINDEX, e->ref);
    }
    if (e->urh) MHD_upgrade_action(e->urh, MHD_UPGRADE_ACTION_CLOSE);
    srv_ent_free(s, e);
  }
  free(s->pfds);
  s->pfds = NULL;
  s->npfds = 0;
  if (s->d) {
    s->closing = 1;
    /* MHD_stop_daemon() must not find a suspended connection: resume every
     * parked request (the handler then refuses it) and let MHD take them
     * off its suspended list. */
    for (r = s->all; r; r = r->all_next) {
      if (r->state == RQ_READY || r->state == RQ_PENDING) {
        if (r->state == RQ_READY) ready_unlink(s, r);
        else {
          srv_slot_release(s, r, 1);
          s->pending--;
        }
        r->state = RQ_DROPPED;
        srv_unpark(r);
      }
    }
    for (i = 0; s->nsuspended > 0 && i < 100; i++) MHD_run(s->d);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    ae_guard_free(&s->guard);
  }
  for (r = s->all; r; r = n) {
    n = r->all_next;
    req_free(s, r);
  }
  for (r = s->free_list; r; r = n) {
    n = r->next;
    ae_buf_free(&r->body);
    free(r);
  }
  s->free_list = NULL;
  s->nfree = 0;
  s->ready_head = s->ready_tail = NULL;
  free(s->slot_req);
  free(s->slot_gen);
  free(s->slot_next);
  free(s->slot_gone);
  s->slot_req = NULL;
  s->slot_gen = s->slot_next = NULL;
  s->slot_gone = NULL;
  s->nslots = 0;
  s->free_head = s->free_tail = NO_SLOT;
  free(s->hdrs);
  s->hdrs = NULL;
  s->hcap = s->nhdrs = 0;
  free(s->tls_cert);
  free(s->tls_key);
  s->tls_cert = s->tls_key = NULL;
  s->pending = 0;
  srv_answers_free(s);
}

static server *check_server(lua_State *L) {
  return (server *)luaL_checkudata(L, 1, SERVER_MT);
}

/* For methods: the open server, or NULL after pushing nil, "closed". */
server *srv_open(lua_State *L) {
  server *s = check_server(L);
  if (!s->d) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return NULL;
  }
  return s;
}

/* server:stats() -> { connections, expired, evicted }: open connections, and
 * how many the guard closed for missing the request deadline or to make room. */
static int srv_stats(lua_State *L) {
  server *s = srv_open(L);
  if (!s) return 2;
  lua_createtable(L, 0, 3);
  ae_setint(L, "connections", (lua_Integer)s->guard.n);
  ae_setint(L, "expired", (lua_Integer)s->guard.expired);
  ae_setint(L, "evicted", (lua_Integer)s->guard.evicted);
  return 1;
}

static int srv_close(lua_State *L) {
  server_shutdown(L, check_server(L));
  lua_pushboolean(L, 1);
  return 1;
}

static int srv_gc(lua_State *L) {
  server_shutdown(L, check_server(L));
  return 0;
}

static int srv_tostring(lua_State *L) {
  server *s = check_server(L);
  if (s->d) lua_pushfstring(L, SERVER_MT " (%s:%d)", s->host, s->port);
  else lua_pushliteral(L, SERVER_MT " (closed)");
  return 1;
}

static int fail_msg(lua_State *L, const char *fmt, const char *host, int port, const char *why) {
  luaL_pushfail(L);
  lua_pushfstring(L, fmt, host, port, why);
  return 2;
}

static int l_http_server(lua_State *L) {
  const char *host, *cert, *key;
  char hostport[96], portstr[16];
  lua_Number portn, max_body, max_conn, conn_timeout, req_timeout, answers;
  struct addrinfo hints, *ai = NULL;
  server *s;
  int fd, one = 1, rc, tls, e;
  unsigned int flags;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  struct MHD_OptionItem ops[12];
  int nops = 0;

  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  host = ae_optstrfield(L, 1, "host", NULL);
  if (!host) host = "127.0.0.1";
  portn = ae_optnumfield(L, 1, "port", 0);
  max_body = ae_optnumfield(L, 1, "max_body", 1048576);
  max_conn = ae_optnumfield(L, 1, "max_connections", 1024);
  conn_timeout = ae_optnumfield(L, 1, "connection_timeout", 60);
  req_timeout = ae_optnumfield(L, 1, "request_timeout", 30);
  answers = ae_optnumfield(L, 1, "answer_cache", 0);
  cert = ae_optstrfield(L, 1, "tls_cert", NULL);
  key = ae_optstrfield(L, 1, "tls_key", NULL);
  luaL_argcheck(L, portn >= 0 && portn <= 65535 && portn == floor(portn), 1,
                "port must be an integer in 0..65535");
  luaL_argcheck(L, max_body >= 0, 1, "max_body must be >= 0");
  luaL_argcheck(L, max_conn >= 1 && max_conn <= 1e6, 1, "max_connections must be in 1..1000000");
  luaL_argcheck(L, conn_timeout >= 0 && conn_timeout <= 1e7, 1, "bad connection_timeout");
  luaL_argcheck(L, req_timeout >= 0 && req_timeout <= 1e7, 1, "bad request_timeout");
  luaL_argcheck(L, answers >= 0 && answers <= 1e7, 1, "answer_cache must be in 0..10000000");
  luaL_argcheck(L, strlen(host) < sizeof s->host, 1, "host too long");
  luaL_argcheck(L, (cert == NULL) == (key == NULL), 1, "tls_cert and tls_key go together");

  /* The handle exists, closed, before anything is acquired. */
  s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->free_head = s->free_tail = NO_SLOT;
  luaL_getmetatable(L, SERVER_MT);
  lua_setmetatable(L, -2);
  s->port = (int)portn;
  snprintf(s->host, sizeof s->host, "%s", host);
  s->max_body = max_body > (lua_Number)(SIZE_MAX / 2) ? SIZE_MAX / 2 : (size_t)max_body;
  ae_guard_init(&s->guard, (size_t)max_conn, req_timeout);
  s->answers.limit = (size_t)answers;

  tls = cert != NULL;
  if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
    luaL_pushfail(L);
    lua_pushliteral(L, "TLS not supported by this libmicrohttpd");
    return 2;
  }
  if (strchr(host, ':')) snprintf(hostport, sizeof hostport, "[%s]", host);
  else snprintf(hostport, sizeof hostport, "%s", host);

  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  snprintf(portstr, sizeof portstr, "%d", s->port);
  rc = getaddrinfo(host, portstr, &hints, &ai);
  if (rc != 0 || !ai) return fail_msg(L, "resolve %s:%d: %s", hostport, s->port, gai_strerror(rc));
  fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    e = errno;
    freeaddrinfo(ai);
    return fail_msg(L, "socket %s:%d: %s", hostport, s->port, strerror(e));
  }
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    e = errno;
    close(fd);
    freeaddrinfo(ai);
    return fail_msg(L, "bind %s:%d: %s", hostport, s->port, strerror(e));
  }
  flags = ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0;
  freeaddrinfo(ai);
  if (listen(fd, SOMAXCONN) != 0) {
    e = errno;
    close(fd);
    return fail_msg(L, "listen %s:%d: %s", hostport, s->port, strerror(e));
  }
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6) s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }

#define OPT(o, v, p)                                                                               \
  (ops[nops].option = (o), ops[nops].value = (intptr_t)(v), ops[nops].ptr_value = (p), nops++)
  OPT(MHD_OPTION_LISTEN_SOCKET, fd, NULL);
  OPT(MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s);
  OPT(MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s);
  OPT(MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, s);
  OPT(MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)no_unescape, NULL);
  OPT(MHD_OPTION_CONNECTION_LIMIT, (unsigned int)max_conn, NULL);
  OPT(MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)conn_timeout, NULL);
  if (tls) {
    s->tls_cert = strdup(cert);
    s->tls_key = strdup(key);
    if (!s->tls_cert || !s->tls_key) {
      close(fd);
      server_shutdown(L, s);
      luaL_pushfail(L);
      lua_pushliteral(L, "out of memory");
      return 2;
    }
    OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert);
    OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key);
    flags |= MHD_USE_TLS;
    s->answers.limit = 0; /* no kept answers over TLS (server_cache.c) */
  }
  OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
  flags |= MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_TURBO;
  if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES) flags |= MHD_USE_EPOLL;

  s->d =
      MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
  if (!s->d) {
    close(fd);
    server_shutdown(L, s);
    return fail_msg(L, "start HTTP server on %s:%d: %s", hostport, s->port,
                    tls ? "libmicrohttpd refused (bad TLS certificate or key?)"
                        : "libmicrohttpd refused");
  }
  return 1;
}

/* core.raise_fd_limit() -> soft, hard | nil, err: raise this process's
 * open-file limit (RLIMIT_NOFILE) to its hard limit, so a server can hold as
 * many connections as the system lets it; returns the limits now. */
static int l_raise_fd_limit(lua_State *L) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  lua_pushinteger(L,
                  rl.rlim_cur == RLIM_INFINITY ? (lua_Integer)1 << 30 : (lua_Integer)rl.rlim_cur);
  lua_pushinteger(L,
                  rl.rlim_max == RLIM_INFINITY ? (lua_Integer)1 << 30 : (lua_Integer)rl.rlim_max);
  return 2;
}

void ae_open_server(lua_State *L) {
  static const luaL_Reg methods[] = {{"port", srv_port},
                                     {"poll", srv_poll},
                                     {"respond", srv_respond},
                                     {"drop", srv_drop},
                                     {"pending", srv_pending},
                                     {"close", srv_close},
                                     {"accept_websocket", srv_accept_websocket},
                                     {"stats", srv_stats},
                                     {"answer_put", srv_answer_put},
                                     {"answer_drop", srv_answer_drop},
                                     {"answer_clear", srv_answer_clear},
                                     {"answer_stats", srv_answer_stats},
                                     {NULL, NULL}};
  ae_newclass(L, SERVER_MT, methods, srv_gc, srv_tostring);
  lua_pushcfunction(L, l_http_server);
  lua_setfield(L, -2, "http_server");
  lua_pushcfunction(L, l_raise_fd_limit);
  lua_setfield(L, -2, "raise_fd_limit");
}

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
 * chunked), which lets a request be smuggled behind a proxy (bad_framing). */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "clock.h"
#include "ws.h"

#define SERVER_MT "analytics_engine.HttpServer"

#if MHD_VERSION >= 0x00097002
#define AE_MHD_RESULT enum MHD_Result
#else
#define AE_MHD_RESULT int
#endif

#define SLOT_BITS 24u
#define SLOT_MASK ((1u << SLOT_BITS) - 1u)
#define GEN_MASK ((1u << 28) - 1u) /* id < 2^52: exact even as a 5.1 double */
#define NO_SLOT UINT32_MAX
#define KEEP_FREE 64                /* request structs kept for reuse */
#define KEEP_BODY (64 * 1024)       /* body buffers kept for reuse up to this size */
#define PRERESERVE_MAX (256 * 1024) /* body buffer reserved from Content-Length, at most */

enum { RQ_COLLECTING, RQ_READY, RQ_PENDING, RQ_ANSWERED, RQ_DROPPED };

struct wsent;

typedef struct request {
  struct request *next;                /* ready queue or free list */
  struct wsent *ent;                   /* a WebSocket upgrade answered on it */
  struct request *all_prev, *all_next; /* every live request, for close() */
  struct MHD_Connection *conn;
  const char *method, *path; /* owned by MHD, valid until completion */
  char *query;               /* raw query string (qbuf or malloc) */
  size_t qlen;
  ae_buf body; /* limited to the server's max_body */
  struct MHD_Response *resp;
  unsigned int status;
  uint32_t slot;
  unsigned char state, started, suspended, too_large;
  char qbuf[112];
} request;

typedef struct {
  const char *k, *v;
  size_t kl, vl;
} hdr_ref;

/* An upgraded (or upgrading) WebSocket connection. The server holds the
 * handle (a registry reference) until Lua closes it or the server closes;
 * the entry itself lives until MHD is done with the connection, because the
 * upgrade callback names it. */
typedef struct wsent {
  struct wsent *prev, *next;
  struct server *s;
  ae_ws *w;                              /* NULL once Lua released the handle */
  int ref;                               /* registry reference to the handle */
  request *r;                            /* until MHD completes the request */
  struct MHD_UpgradeResponseHandle *urh; /* set by the upgrade callback */
  int news;                              /* report to Lua on the next poll */
} wsent;

typedef struct server {
  struct MHD_Daemon *d; /* NULL: closed */
  int port;
  char host[64];
  size_t max_body;
  int closing;
  request *ready_head, *ready_tail;
  request *all;
  request *free_list;
  int nfree;
  size_t pending; /* handed to Lua, not answered yet */
  size_t nsuspended;
  /* requests handed to Lua, by id: slot index in the low bits, generation above */
  request **slot_req;
  uint32_t *slot_gen, *slot_next;
  unsigned char *slot_gone;
  uint32_t nslots, free_head, free_tail;
  /* scratch for header collection */
  hdr_ref *hdrs;
  size_t nhdrs, hcap;
  int hdr_oom;
  char *tls_cert, *tls_key;
  wsent *ws;           /* WebSocket connections */
  struct pollfd *pfds; /* scratch for waiting on them */
  size_t npfds;
} server;

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
  r->started = r->suspended = r->too_large = 0;
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

/* ------------------------------------------------------------------- slots */

/* Make sure a free slot exists; returns its index or NO_SLOT (no memory). */
static uint32_t slot_peek(server *s) {
  if (s->free_head == NO_SLOT) {
    uint32_t n = s->nslots ? s->nslots * 2 : 64, i;
    request **nr;
    uint32_t *ng, *nn;
    unsigned char *ngone;
    if (n > SLOT_MASK + 1u) n = SLOT_MASK + 1u;
    if (n <= s->nslots) return NO_SLOT;
    nr = realloc(s->slot_req, n * sizeof *nr);
    if (!nr) return NO_SLOT;
    s->slot_req = nr;
    ng = realloc(s->slot_gen, n * sizeof *ng);
    if (!ng) return NO_SLOT;
    s->slot_gen = ng;
    nn = realloc(s->slot_next, n * sizeof *nn);
    if (!nn) return NO_SLOT;
    s->slot_next = nn;
    ngone = realloc(s->slot_gone, n);
    if (!ngone) return NO_SLOT;
    s->slot_gone = ngone;
    for (i = s->nslots; i < n; i++) {
      s->slot_req[i] = NULL;
      s->slot_gen[i] = 0;
      s->slot_gone[i] = 0;
      s->slot_next[i] = i + 1 < n ? i + 1 : NO_SLOT;
    }
    s->free_head = s->nslots;
    s->free_tail = n - 1;
    s->nslots = n;
  }
  return s->free_head;
}

static lua_Integer slot_id(server *s, uint32_t i, uint32_t gen) {
  return (lua_Integer)(((uint64_t)gen << SLOT_BITS) | i);
}

static uint32_t next_gen(uint32_t g) {
  g = (g + 1) & GEN_MASK;
  return g ? g : 1;
}

/* Take the slot slot_peek returned. */
static void slot_take(server *s, request *r) {
  uint32_t i = s->free_head;
  s->free_head = s->slot_next[i];
  if (s->free_head == NO_SLOT) s->free_tail = NO_SLOT;
  s->slot_gen[i] = next_gen(s->slot_gen[i]);
  s->slot_gone[i] = 0;
  s->slot_req[i] = r;
  r->slot = i;
}

/* Release a slot to the tail of the free list (FIFO, so an id stays "gone"
 * rather than "unknown" for as long as possible). */
static void slot_release(server *s, request *r, int gone) {
  uint32_t i = r->slot;
  if (i == NO_SLOT) return;
  s->slot_req[i] = NULL;
  s->slot_gone[i] = (unsigned char)gone;
  s->slot_next[i] = NO_SLOT;
  if (s->free_tail == NO_SLOT) s->free_head = i;
  else s->slot_next[s->free_tail] = i;
  s->free_tail = i;
  r->slot = NO_SLOT;
}

static const char *slot_lookup(server *s, lua_Integer id, request **out) {
  uint64_t u = (uint64_t)id;
  uint32_t i = (uint32_t)(u & SLOT_MASK);
  uint64_t gen = u >> SLOT_BITS;
  *out = NULL;
  if (id <= 0 || i >= s->nslots || gen != s->slot_gen[i]) return "unknown request";
  if (!s->slot_req[i]) return s->slot_gone[i] ? "gone" : "unknown request";
  *out = s->slot_req[i];
  return NULL;
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

/* What is wrong with the request's framing (RFC 9112 sections 5.1, 6.1,
 * 6.3), or NULL. */
typedef struct {
  int ncl, nte, bad_name;
  const char *cl, *te;
  int cl_differ;
} framing;

static AE_MHD_RESULT count_framing(void *cls, enum MHD_ValueKind kind, const char *k, size_t kl,
                                   const char *v, size_t vl) {
  framing *f = cls;
  if (kl == 0 || memchr(k, ' ', kl) || memchr(k, '\t', kl)) f->bad_name = 1;
  if (strcasecmp(k, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
    if (f->ncl++ && v && f->cl && strcmp(v, f->cl) != 0) f->cl_differ = 1;
    f->cl = v;
  } else if (strcasecmp(k, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
    f->nte++;
    f->te = v;
  }
  return MHD_YES;
}

static const char *bad_framing(struct MHD_Connection *c, const char *version) {
  framing f;
  memset(&f, 0, sizeof f);
  MHD_get_connection_values_n(c, MHD_HEADER_KIND, count_framing, &f);
  if (f.bad_name) return "a header name is empty or has white space before the colon";
  if (f.nte && f.ncl) return "Content-Length and Transfer-Encoding together";
  if (f.cl_differ) return "Content-Length headers that differ";
  if (f.nte) {
    if (strcmp(version, MHD_HTTP_VERSION_1_1) != 0)
      return "Transfer-Encoding in an HTTP/1.0 request";
    if (f.nte > 1 || !f.te || strcasecmp(f.te, "chunked") != 0)
      return "a Transfer-Encoding other than chunked";
  }
  return NULL;
}

/* Refuse the request with 400 and close the connection: after bad framing
 * nothing that follows on it can be trusted to be a request. */
static AE_MHD_RESULT refuse_framing(struct MHD_Connection *c, const char *why) {
  char body[256];
  struct MHD_Response *resp;
  AE_MHD_RESULT ret;
  int n = snprintf(body, sizeof body,
                   "{\"errors\":[{\"code\":\"bad_framing\",\"message\":\"ambiguous request "
                   "framing: %s\"}],\"status_code\":400}",
                   why);
  resp = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
  if (!resp) return MHD_NO;
  if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES ||
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES) {
    MHD_destroy_response(resp);
    return MHD_NO;
  }
  ret = MHD_queue_response(c, MHD_HTTP_BAD_REQUEST, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* Suspend a connection whose request waits for Lua. */
static void park(server *s, request *r) {
  r->suspended = 1;
  s->nsuspended++;
  MHD_suspend_connection(r->conn);
}

/* Resume a parked connection; one not parked yet (see on_request) finds its
 * answer on the next handler call. */
static void unpark(request *r) {
  if (r->suspended) MHD_resume_connection(r->conn);
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
      why = bad_framing(c, version);
      if (why) {
        r->state = RQ_DROPPED;
        return refuse_framing(c, why);
      }
      cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
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
    /* The request is complete: hand it to Lua, but do not suspend yet.
     * libmicrohttpd keeps the connection's "wants to read" mark while it is
     * suspended and reads right after the resume: a client that half-closed
     * then reads as end-of-file and libmicrohttpd closes the connection
     * before the answer is written. Returning without a response lets it
     * mark the connection as waiting for the application (no reading); it
     * calls again on its next run, and that call suspends. */
    r->state = RQ_READY;
    r->next = NULL;
    if (s->ready_tail) s->ready_tail->next = r;
    else s->ready_head = r;
    s->ready_tail = r;
    return MHD_YES;
  case RQ_READY:
  case RQ_PENDING: /* the call after the request completed: park it now */
    park(s, r);
    return MHD_YES;
  case RQ_ANSWERED:
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

static void ent_free(server *s, wsent *e) {
  if (e->prev) e->prev->next = e->next;
  else s->ws = e->next;
  if (e->next) e->next->prev = e->prev;
  if (e->r) e->r->ent = NULL;
  free(e);
}

/* MHD hands over the socket (inside MHD_run: no Lua here). */
static void on_upgrade(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra,
                       size_t n, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh) {
  wsent *e = cls;
  e->urh = urh;
  if (!e->w) { /* Lua closed the handle meanwhile */
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    ent_free(e->s, e);
    return;
  }
  ae_ws_upgraded(e->w, sock, extra, n, urh);
  e->news = 1;
}

/* The handle is released (ws:close or its __gc). */
static void on_ws_release(lua_State *L, void *owner, ae_ws *w, void *urh) {
  wsent *e = owner;
  e->w = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, e->ref);
  e->ref = LUA_NOREF;
  if (e->urh) {
    MHD_upgrade_action(e->urh, MHD_UPGRADE_ACTION_CLOSE);
    ent_free(e->s, e);
  } else if (!e->r) {
    ent_free(e->s, e);
  } /* else: upgrading; on_upgrade or on_completed frees it */
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  server *s = cls;
  request *r = *con_cls;
  if (!r) return;
  *con_cls = NULL;
  if (r->ent) {
    wsent *e = r->ent;
    r->ent = NULL;
    e->r = NULL;
    if (!e->urh && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) { /* no upgrade will come */
      if (e->w) {
        ae_ws_fail_upgrade(e->w, "the connection closed before the upgrade");
        e->news = 1;
      } else {
        ent_free(s, e);
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
    slot_release(s, r, 1);
    s->pending--;
  }
  req_free(s, r);
}

/* ----------------------------------------------------------------- helpers */

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
    ent_free(s, e);
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
          slot_release(s, r, 1);
          s->pending--;
        }
        r->state = RQ_DROPPED;
        unpark(r);
      }
    }
    for (i = 0; s->nsuspended > 0 && i < 100; i++) MHD_run(s->d);
    MHD_stop_daemon(s->d);
    s->d = NULL;
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
}

static server *check_server(lua_State *L) {
  return (server *)luaL_checkudata(L, 1, SERVER_MT);
}

/* For methods: the open server, or NULL after pushing nil, "closed". */
static server *open_server(lua_State *L) {
  server *s = check_server(L);
  if (!s->d) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return NULL;
  }
  return s;
}

/* ----------------------------------------------------------------- methods */

static int srv_port(lua_State *L) {
  server *s = open_server(L);
  if (!s) return 2;
  lua_pushinteger(L, s->port);
  return 1;
}

static int srv_pending(lua_State *L) {
  server *s = open_server(L);
  if (!s) return 2;
  lua_pushinteger(L, (lua_Integer)s->pending);
  return 1;
}

static AE_MHD_RESULT collect_header(void *cls, enum MHD_ValueKind kind, const char *k, size_t kl,
                                    const char *v, size_t vl) {
  server *s = cls;
  if (s->nhdrs == s->hcap) {
    size_t n = s->hcap ? s->hcap * 2 : 32;
    hdr_ref *h = realloc(s->hdrs, n * sizeof *h);
    if (!h) {
      s->hdr_oom = 1;
      return MHD_NO;
    }
    s->hdrs = h;
    s->hcap = n;
  }
  s->hdrs[s->nhdrs].k = k;
  s->hdrs[s->nhdrs].kl = kl;
  s->hdrs[s->nhdrs].v = v ? v : "";
  s->hdrs[s->nhdrs].vl = v ? vl : 0;
  s->nhdrs++;
  return MHD_YES;
}

static void push_lower(lua_State *L, const char *k, size_t kl) {
  char buf[128];
  size_t i;
  if (kl <= sizeof buf) {
    for (i = 0; i < kl; i++) {
      unsigned char ch = (unsigned char)k[i];
      buf[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    lua_pushlstring(L, buf, kl);
  } else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (i = 0; i < kl; i++) {
      unsigned char ch = (unsigned char)k[i];
      luaL_addchar(&b, (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch));
    }
    luaL_pushresult(&b);
  }
}

/* Push the Lua table for request r, which will get id `id`. */
static void push_request(lua_State *L, server *s, request *r, lua_Integer id) {
  const union MHD_ConnectionInfo *ci;
  size_t i;
  lua_createtable(L, 0, 8);
  ae_setint(L, "id", id);
  ae_setstr(L, "method", r->method ? r->method : "");
  ae_setstr(L, "path", r->path ? r->path : "");
  lua_pushlstring(L, r->query, r->qlen);
  lua_setfield(L, -2, "query");
  lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
  lua_setfield(L, -2, "body");
  if (r->too_large) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "too_large");
  }
  ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr) {
    char buf[INET6_ADDRSTRLEN] = "";
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                sizeof buf);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                sizeof buf);
    ae_setstr(L, "remote", buf);
  }
  s->nhdrs = 0;
  s->hdr_oom = 0;
  MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, collect_header, s);
  lua_createtable(L, 0, (int)s->nhdrs);
  for (i = 0; i < s->nhdrs; i++) {
    const hdr_ref *h = &s->hdrs[i];
    push_lower(L, h->k, h->kl);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, h->v, h->vl);
    } else { /* a repeated header: join the values as HTTP allows */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->v, h->vl);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
}

/* Pump every open WebSocket; 1 if any has news for Lua. */
static int pump_ws(server *s) {
  wsent *e;
  int any = 0;
  for (e = s->ws; e; e = e->next) {
    if (e->w && ae_ws_pump(e->w)) e->news = 1;
    any |= e->news;
  }
  return any;
}

/* Wait for the daemon and the WebSockets at once: poll() on MHD's epoll
 * descriptor plus every upgraded socket, then run MHD and the sockets. */
static int wait_all(server *s, int32_t ms) {
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
  MHD_UNSIGNED_LONG_LONG mto;
  size_t n = 1, cap = 1;
  wsent *e;
  for (e = s->ws; e; e = e->next) cap++;
  if (cap > s->npfds) {
    struct pollfd *p = realloc(s->pfds, cap * sizeof *p);
    if (!p) return MHD_run_wait(s->d, ms > 10 ? 10 : ms) == MHD_YES;
    s->pfds = p;
    s->npfds = cap;
  }
  if (!di) return MHD_run_wait(s->d, ms > 10 ? 10 : ms) == MHD_YES; /* no epoll: short waits */
  s->pfds[0].fd = di->epoll_fd;
  s->pfds[0].events = POLLIN;
  for (e = s->ws; e; e = e->next) {
    int fd, r;
    short ev;
    if (!e->w) continue;
    if (e->news) ms = 0;
    r = ae_ws_waitfd(e->w, &fd, &ev);
    if (r == 0) ms = 0; /* buffered bytes to process */
    if (r != 1 || ev == 0) continue;
    s->pfds[n].fd = fd;
    s->pfds[n].events = ev;
    n++;
  }
  if (MHD_get_timeout(s->d, &mto) == MHD_YES && (MHD_UNSIGNED_LONG_LONG)ms > mto) ms = (int32_t)mto;
  poll(s->pfds, (nfds_t)n, ms);
  if (MHD_run(s->d) != MHD_YES) return 0;
  pump_ws(s);
  return 1;
}

static int srv_poll(lua_State *L) {
  server *s = open_server(L);
  double timeout, deadline;
  lua_Integer n = 0;
  int sigs, news = 0;
  if (!s) return 2;
  timeout = luaL_optnumber(L, 2, 0);
  if (!(timeout > 0)) timeout = 0; /* also NaN */
  if (timeout > 86400.0 * 365) timeout = 86400.0 * 365;
  deadline = ae_clock_mono() + timeout;
  sigs = ae_signal_count();
  for (;;) {
    double rem = s->ready_head ? 0 : deadline - ae_clock_mono();
    int32_t ms = rem > 0 ? (int32_t)ceil(rem * 1000.0) : 0;
    if (s->ws) {
      if (!wait_all(s, ms)) break;
      news = pump_ws(s);
    } else if (MHD_run_wait(s->d, ms) != MHD_YES) {
      break;
    }
    if (s->ready_head || news || ms == 0 || ae_clock_mono() >= deadline) break;
    if (ae_signal_count() != sigs) break; /* let Lua see core.signal_pending() */
  }
  lua_newtable(L);
  while (s->ready_head) {
    request *r = s->ready_head;
    uint32_t i = slot_peek(s);
    if (i == NO_SLOT) break; /* out of memory: the rest stays queued */
    push_request(L, s, r, slot_id(s, i, next_gen(s->slot_gen[i])));
    lua_rawseti(L, -2, (int)++n);
    s->ready_head = r->next;
    if (!s->ready_head) s->ready_tail = NULL;
    r->next = NULL;
    r->state = RQ_PENDING;
    slot_take(s, r);
    s->pending++;
  }
  if (s->ws) news = pump_ws(s);
  if (news) { /* second result: the WebSockets with news (messages, or ended) */
    wsent *e;
    lua_Integer k = 0;
    lua_newtable(L);
    for (e = s->ws; e; e = e->next) {
      if (!e->news || !e->w) continue;
      e->news = 0;
      lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
      lua_rawseti(L, -2, (int)++k);
    }
    return 2;
  }
  return 1;
}

/* server:accept_websocket(id [, opts]) -> ws | nil, err: answer request id
 * with 101 Switching Protocols. opts: headers (extra response headers),
 * max_message_size, control_frames. The handle is usable once the upgrade
 * is done (its state turns "open" in a later poll); poll's second result
 * lists handles with news. */
static int srv_accept_websocket(lua_State *L) {
  server *s = open_server(L);
  const char *err, *key, *v;
  char accept[29];
  request *r;
  struct MHD_Response *resp;
  wsent *e;
  ae_ws *w;
  if (!s) return 2;
  luaL_checkinteger(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  if (!lua_isnil(L, 3)) { /* check types first: nothing below may raise */
    lua_getfield(L, 3, "headers");
    if (!lua_isnil(L, -1)) {
      luaL_argcheck(L, lua_istable(L, -1), 3, "headers must be a table");
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
          luaL_argerror(L, 3, "header names and values must be strings");
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  err = slot_lookup(s, lua_tointeger(L, 2), &r);
  if (err) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  key = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
  v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Upgrade");
  if (!key || !v || strcasecmp(v, "websocket") != 0 || strcmp(r->method, "GET") != 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not a WebSocket upgrade request");
    return 2;
  }
  v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
  if (!v || strcmp(v, "13") != 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "unsupported Sec-WebSocket-Version (13 is required)");
    return 2;
  }
  ae_ws_accept_key(key, strlen(key), accept);
  w = ae_ws_new_server(L, lua_isnil(L, 3) ? 0 : 3); /* may raise: nothing acquired yet */
  e = calloc(1, sizeof *e);
  if (!e) return luaL_error(L, "out of memory");
  resp = MHD_create_response_for_upgrade(on_upgrade, e);
  if (!resp) {
    free(e);
    return luaL_error(L, "out of memory");
  }
  if (MHD_add_response_header(resp, "Upgrade", "websocket") != MHD_YES ||
      MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept) != MHD_YES)
    goto oom;
  if (!lua_isnil(L, 3)) {
    lua_getfield(L, 3, "headers");
    if (!lua_isnil(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (MHD_add_response_header(resp, lua_tostring(L, -2), lua_tostring(L, -1)) != MHD_YES) {
          lua_pop(L, 3);
          goto oom;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  e->s = s;
  e->w = w;
  e->r = r;
  lua_pushvalue(L, -1);
  e->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  e->next = s->ws;
  if (s->ws) s->ws->prev = e;
  s->ws = e;
  r->ent = e;
  ae_ws_set_owner(w, e, on_ws_release);
  r->resp = resp;
  r->status = 101;
  r->state = RQ_ANSWERED;
  slot_release(s, r, 0);
  s->pending--;
  unpark(r);
  return 1;
oom:
  MHD_destroy_response(resp);
  free(e);
  return luaL_error(L, "out of memory");
}

static int is_content_length(const char *k) {
  return strcasecmp(k, "content-length") == 0;
}

static int srv_respond(lua_State *L) {
  server *s = open_server(L);
  lua_Integer id, status;
  const char *body, *err;
  size_t blen;
  request *r;
  struct MHD_Response *resp;
  int has_headers;
  if (!s) return 2;
  id = luaL_checkinteger(L, 2);
  status = luaL_checkinteger(L, 3);
  luaL_argcheck(L, status >= 100 && status <= 999, 3, "HTTP status out of range");
  has_headers = !lua_isnoneornil(L, 4);
  if (has_headers) luaL_checktype(L, 4, LUA_TTABLE);
  body = luaL_optlstring(L, 5, "", &blen);
  if (has_headers) { /* check types first: nothing below may raise */
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      int vt = lua_type(L, -1);
      if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER))
        luaL_argerror(L, 4, "header names and values must be strings");
      lua_pop(L, 1);
    }
  }
  err = slot_lookup(s, id, &r);
  if (err) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  resp = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!resp) {
    luaL_pushfail(L);
    lua_pushliteral(L, "out of memory");
    return 2;
  }
  if (has_headers) {
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      size_t kl, vl;
      const char *k = lua_tolstring(L, -2, &kl), *v;
      char num[64];
      if (lua_type(L, -1) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, -1))
          snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, -1));
        else
#endif
          snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, -1));
        v = num;
        vl = strlen(num);
      } else {
        v = lua_tolstring(L, -1, &vl);
      }
      if (is_content_length(k)) { /* MHD sets it from the body */
        lua_pop(L, 1);
        continue;
      }
      if (kl != strlen(k) || vl != strlen(v) || kl == 0 ||
          MHD_add_response_header(resp, k, v) != MHD_YES) {
        MHD_destroy_response(resp);
        luaL_pushfail(L);
        lua_pushfstring(L, "invalid header '%s'", k);
        return 2;
      }
      lua_pop(L, 1);
    }
  }
  r->resp = resp;
  r->status = (unsigned int)status;
  r->state = RQ_ANSWERED;
  slot_release(s, r, 0);
  s->pending--;
  unpark(r);
  lua_pushboolean(L, 1);
  return 1;
}

static int srv_drop(lua_State *L) {
  server *s = open_server(L);
  const char *err;
  request *r;
  if (!s) return 2;
  err = slot_lookup(s, luaL_checkinteger(L, 2), &r);
  if (err) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  r->state = RQ_DROPPED;
  slot_release(s, r, 0);
  s->pending--;
  unpark(r);
  lua_pushboolean(L, 1);
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

/* ------------------------------------------------------------- constructor */

static int fail_msg(lua_State *L, const char *fmt, const char *host, int port, const char *why) {
  luaL_pushfail(L);
  lua_pushfstring(L, fmt, host, port, why);
  return 2;
}

static int l_http_server(lua_State *L) {
  const char *host, *cert, *key;
  char hostport[96], portstr[16];
  lua_Number portn, max_body, max_conn, conn_timeout;
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
  cert = ae_optstrfield(L, 1, "tls_cert", NULL);
  key = ae_optstrfield(L, 1, "tls_key", NULL);
  luaL_argcheck(L, portn >= 0 && portn <= 65535 && portn == floor(portn), 1,
                "port must be an integer in 0..65535");
  luaL_argcheck(L, max_body >= 0, 1, "max_body must be >= 0");
  luaL_argcheck(L, max_conn >= 1 && max_conn <= 1e6, 1, "max_connections must be in 1..1000000");
  luaL_argcheck(L, conn_timeout >= 0 && conn_timeout <= 1e7, 1, "bad connection_timeout");
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

void ae_open_server(lua_State *L) {
  static const luaL_Reg methods[] = {{"port", srv_port},
                                     {"poll", srv_poll},
                                     {"respond", srv_respond},
                                     {"drop", srv_drop},
                                     {"pending", srv_pending},
                                     {"close", srv_close},
                                     {"accept_websocket", srv_accept_websocket},
                                     {NULL, NULL}};
  ae_newclass(L, SERVER_MT, methods, srv_gc, srv_tostring);
  lua_pushcfunction(L, l_http_server);
  lua_setfield(L, -2, "http_server");
}

/* The HTTP server's insides, shared by server.c (the daemon, its callbacks,
 * the server's life), server_framing.c (framing checks), server_req.c
 * (requests as Lua sees them: ids, poll, respond, drop) and server_ws.c
 * (WebSocket upgrades). */
#ifndef AE_SERVER_H
#define AE_SERVER_H
#include <poll.h>
#include <stdint.h>

#include <microhttpd.h>

#include "buf.h"
#include "core.h"
#include "server_guard.h"
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
  unsigned char state, started, suspended, parked, too_large;
  char qbuf[112];
} request;

typedef struct {
  const char *k, *v;
  size_t kl, vl;
} hdr_ref;

/* Answers Lua let the server give again without asking it (server_cache.c):
 * a hash table by path, each entry one (path, Authorization value) pair. */
#define ANSWER_TAGS 16
typedef struct ae_answer ae_answer;
typedef struct {
  ae_answer **b;                 /* buckets; nb is a power of two */
  size_t nb, n, limit;           /* limit 0: the cache is off */
  char *tags[ANSWER_TAGS];       /* what Lua counts hits by (operation names) */
  lua_Integer hits[ANSWER_TAGS]; /* answers given, by tag */
  int ntags;
} ae_answers;

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
  ae_guard guard;      /* every connection, for deadlines and eviction */
  wsent *ws;           /* WebSocket connections */
  struct pollfd *pfds; /* scratch for waiting on them */
  size_t npfds;
  ae_answers answers; /* replayed answers (server_cache.c) */
} server;

/* server.c */
server *srv_open(lua_State *L); /* the open server, or NULL after pushing nil, "closed" */
void srv_unpark(request *r);

/* server_framing.c */
const char *srv_bad_framing(struct MHD_Connection *c, const char *version);
AE_MHD_RESULT srv_refuse_framing(struct MHD_Connection *c, const char *why);

/* server_req.c */
void srv_slot_release(server *s, request *r, int gone);
void srv_settle(server *s, request *r, int state);
const char *srv_slot_lookup(server *s, lua_Integer id, request **out);
int srv_port(lua_State *L);
int srv_pending(lua_State *L);
int srv_poll(lua_State *L);
int srv_respond(lua_State *L);
int srv_drop(lua_State *L);

int srv_check_headers(lua_State *L, int idx);
int srv_add_headers(lua_State *L, int idx, struct MHD_Response *resp);

/* server_cache.c */
struct MHD_Response *srv_answer_lookup(server *s, struct MHD_Connection *c, const char *path,
                                       unsigned int *status);
void srv_answers_free(server *s);
int srv_answer_put(lua_State *L);
int srv_answer_drop(lua_State *L);
int srv_answer_clear(lua_State *L);
int srv_answer_stats(lua_State *L);

/* server_ws.c */
void srv_ent_free(server *s, wsent *e);
int srv_pump_ws(server *s);
void srv_evict_ws(server *s);
int srv_wait_all(server *s, int32_t ms);
int srv_accept_websocket(lua_State *L);
#endif

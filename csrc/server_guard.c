/* Connection flood guard for server.c: see server_guard.h. */
#include "server_guard.h"

#include <stdlib.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "clock.h"

#define SWEEP_EVERY 0.1 /* seconds between sweeps */

static void unlink_conn(ae_guard *g, ae_conn *k) {
  if (k->prev) k->prev->next = k->next;
  else g->head = k->next;
  if (k->next) k->next->prev = k->prev;
  else g->tail = k->prev;
  k->prev = k->next = NULL;
}

static void append(ae_guard *g, ae_conn *k) {
  k->prev = g->tail;
  k->next = NULL;
  if (g->tail) g->tail->next = k;
  else g->head = k;
  g->tail = k;
}

static ae_conn *conn_of(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? (ae_conn *)ci->socket_context : NULL;
}

void ae_guard_init(ae_guard *g, size_t max_connections, double request_timeout) {
  size_t margin = max_connections / 20;
  g->head = g->tail = NULL;
  g->n = g->nshut = 0;
  if (margin < 1) margin = 1;
  g->high = max_connections > margin ? max_connections - margin : max_connections;
  g->low = g->high > margin ? g->high - margin : g->high;
  g->request_timeout = request_timeout;
  g->next_sweep = 0;
  g->expired = g->evicted = 0;
}

void ae_guard_notify(ae_guard *g, struct MHD_Connection *c, void **socket_context, int closed) {
  ae_conn *k;
  if (closed) {
    k = *socket_context;
    if (!k) return;
    *socket_context = NULL;
    unlink_conn(g, k);
    if (k->shut) g->nshut--;
    g->n--;
    free(k);
    return;
  }
  k = calloc(1, sizeof *k);
  if (!k) return; /* untracked: only the guard's view of it is lost */
  {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    k->fd = ci ? ci->connect_fd : -1;
  }
  k->since = ae_clock_mono();
  append(g, k);
  g->n++;
  *socket_context = k;
}

void ae_guard_busy(struct MHD_Connection *c) {
  ae_conn *k = conn_of(c);
  if (k) k->busy = 1;
}

void ae_guard_idle(ae_guard *g, struct MHD_Connection *c) {
  ae_conn *k = conn_of(c);
  if (!k || k->upgraded) return;
  k->busy = 0;
  k->since = ae_clock_mono();
  unlink_conn(g, k); /* to the tail: the list stays ordered by since */
  append(g, k);
}

void ae_guard_upgraded(struct MHD_Connection *c) {
  ae_conn *k = conn_of(c);
  if (k) k->upgraded = k->busy = 1;
}

static void shut(ae_guard *g, ae_conn *k) {
  if (k->fd >= 0) shutdown(k->fd, SHUT_RDWR);
  k->shut = 1;
  g->nshut++;
}

void ae_guard_sweep(ae_guard *g, double now) {
  ae_conn *k, *next;
  int evict;
  if (now < g->next_sweep) return;
  g->next_sweep = now + SWEEP_EVERY;
  evict = g->n - g->nshut > g->high;
  for (k = g->head; k; k = next) {
    next = k->next;
    if (k->busy || k->shut) continue;
    if (g->request_timeout > 0 && now - k->since > g->request_timeout) {
      shut(g, k);
      g->expired++;
    } else if (evict && g->n - g->nshut > g->low) {
      shut(g, k);
      g->evicted++;
    } else {
      break; /* ordered by since: the rest are younger */
    }
  }
}

void ae_guard_free(ae_guard *g) {
  ae_conn *k = g->head, *next;
  for (; k; k = next) {
    next = k->next;
    free(k);
  }
  g->head = g->tail = NULL;
  g->n = g->nshut = 0;
}

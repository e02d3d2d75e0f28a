/* The HTTP server's guard against connection floods: every open connection
 * is tracked from accept to close, in the order it last became idle. A
 * connection must deliver a complete request within request_timeout of
 * opening or of its previous answer (trickled bytes do not extend it), and
 * when the connections near the limit the oldest ones not serving a request
 * are closed to make room. libmicrohttpd 0.9.75 has neither (its timeout is
 * reset by any byte; at its limit it refuses new connections, the
 * legitimate ones too). Closing is shutdown() on the socket: libmicrohttpd
 * then sees end-of-file and closes the connection itself. */
#ifndef AE_SERVER_GUARD_H
#define AE_SERVER_GUARD_H
#include <stddef.h>

struct MHD_Connection;

typedef struct ae_conn {
  struct ae_conn *prev, *next;
  int fd;
  double since; /* opened, or answered its last request */
  unsigned char busy, upgraded, shut;
} ae_conn;

typedef struct {
  ae_conn *head, *tail; /* head: idle the longest */
  size_t n, nshut;
  size_t high, low;       /* evict above high, down to low */
  double request_timeout; /* <= 0: none */
  double next_sweep;
  size_t expired, evicted; /* counters, for stats */
} ae_guard;

void ae_guard_init(ae_guard *g, size_t max_connections, double request_timeout);
/* MHD_OPTION_NOTIFY_CONNECTION: started (0) or closed (1). */
void ae_guard_notify(ae_guard *g, struct MHD_Connection *c, void **socket_context, int closed);
/* A complete request arrived: exempt until answered. */
void ae_guard_busy(struct MHD_Connection *c);
/* Its request is done: idle again from now (unless it was upgraded). */
void ae_guard_idle(ae_guard *g, struct MHD_Connection *c);
/* It became a WebSocket: exempt for good. */
void ae_guard_upgraded(struct MHD_Connection *c);
/* Close what is overdue and, near the limit, the oldest idle ones. */
void ae_guard_sweep(ae_guard *g, double now);
/* Free the records (after the daemon stopped). */
void ae_guard_free(ae_guard *g);

#endif

/* The WebSocket handle (ws*.c) as server_ws.c and http.c use it. */
#ifndef AE_WS_H
#define AE_WS_H
#include <poll.h>
#include <stddef.h>
#include "compat.h"

typedef struct ae_ws ae_ws;
/* Called once when a server-side handle is released: the owner closes the
 * upgraded socket (MHD_upgrade_action) and drops its reference. */
typedef void (*ae_ws_release_fn)(lua_State *L, void *owner, ae_ws *w, void *urh);

void ae_ws_accept_key(const char *key, size_t klen, char out[29]);
ae_ws *ae_ws_new_server(lua_State *L, int opts); /* pushes the handle (may raise) */
void ae_ws_set_owner(ae_ws *w, void *owner, ae_ws_release_fn fn);
void ae_ws_upgraded(ae_ws *w, int fd, const char *extra, size_t n, void *urh);
void ae_ws_fail_upgrade(ae_ws *w, const char *why);
int ae_ws_pump(ae_ws *w);
/* The guard's view (server side): a started frame must be whole within t
 * seconds (<= 0: none); when the current frame's deadline passes (0: no frame
 * under way); when the last whole frame came, or -1 if the handle is not an
 * open session between frames (not a candidate for eviction). */
void ae_ws_set_frame_timeout(ae_ws *w, double t);
double ae_ws_frame_deadline(const ae_ws *w);
double ae_ws_idle_since(const ae_ws *w);
/* Close with `code` (a close frame, best effort) and fail with `kind`. */
void ae_ws_close_for(ae_ws *w, int code, const char *kind, const char *msg);
void ae_ws_orphan(ae_ws *w);
int ae_ws_waitfd(ae_ws *w, int *fd, short *events);
int ae_ws_is_ws(lua_State *L, int idx, ae_ws **out);
int ae_waitfd_item(lua_State *L, int idx, struct pollfd *p);
#endif

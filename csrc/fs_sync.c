/* append_start: a journal append whose fdatasync runs on its own thread, so
 * the runner's loop keeps its transfers going while the disk syncs (a sync
 * took 10-90 ms under load, and every submission waited behind it).
 *
 *   local sync = core.append_start(path, data)  -- data written, sync started
 *   sync:done()  -> false while syncing; true once synced; nil, err if not
 *   sync:fd()    -> a descriptor readable once the sync ended (loop:wait_fd)
 *   sync:wait()  -> true | nil, err: block until it ended
 *
 * The thread touches nothing but its box's fd, err and eventfd; the result is
 * read only after pthread_join, which orders its writes before our reads. A
 * sync that fails cuts the file back to its size before the append (as
 * append_file does), so the file never keeps a record it did not sync. The
 * handle is collected or closed only after its thread ended. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core.h"

#define SYNC_MT "analytics_engine.Sync"

enum { SYNC_RUNNING, SYNC_OK, SYNC_FAILED, SYNC_CLOSED };

typedef struct {
  pthread_t th;
  int fd;      /* the file while the sync runs, then -1 */
  int efd;     /* eventfd written once the sync ended, -1 once closed */
  off_t size;  /* the file's size before the append */
  int err;     /* fdatasync's errno (0: synced), set by the thread */
  int state;   /* SYNC_* */
  int joined;  /* the thread was started and not yet joined */
  char path[]; /* for messages */
} syncbox;

static void *sync_main(void *p) {
  syncbox *b = p;
  uint64_t one = 1;
  b->err = fdatasync(b->fd) == 0 ? 0 : (errno ? errno : EIO);
  /* (a full eventfd counter cannot happen: one write per box) */
  while (write(b->efd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  return NULL;
}

/* The sync ended: its result, the file cut back if it failed. */
static void finish(syncbox *b) {
  if (b->err != 0) ae_append_undo(b->fd, b->size);
  close(b->fd);
  b->fd = -1;
  b->state = b->err == 0 ? SYNC_OK : SYNC_FAILED;
}

/* Join the thread (blocks while it syncs) and settle the result once. */
static void settle(syncbox *b) {
  if (!b->joined) return;
  pthread_join(b->th, NULL);
  b->joined = 0;
  finish(b);
}

static int push_result(lua_State *L, syncbox *b) {
  if (b->state == SYNC_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_pushfail(L);
  lua_pushfstring(L, "sync %s: %s", b->path, strerror(b->err));
  return 2;
}

static syncbox *check_sync(lua_State *L) {
  return (syncbox *)luaL_checkudata(L, 1, SYNC_MT);
}

static int sync_done(lua_State *L) {
  syncbox *b = check_sync(L);
  uint64_t n;
  if (b->state == SYNC_RUNNING) {
    ssize_t r = read(b->efd, &n, sizeof n); /* non-blocking */
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
      lua_pushboolean(L, 0);
      return 1;
    }
    settle(b);
  }
  if (b->state == SYNC_CLOSED) return luaL_error(L, "sync handle is closed");
  return push_result(L, b);
}

static int sync_wait(lua_State *L) {
  syncbox *b = check_sync(L);
  if (b->state == SYNC_CLOSED) return luaL_error(L, "sync handle is closed");
  settle(b);
  return push_result(L, b);
}

static int sync_fd(lua_State *L) {
  syncbox *b = check_sync(L);
  if (b->efd < 0) return luaL_error(L, "sync handle is closed");
  lua_pushinteger(L, b->efd);
  return 1;
}

static int sync_close(lua_State *L) {
  syncbox *b = check_sync(L);
  settle(b); /* waits for the thread: it still uses fd and efd */
  if (b->efd >= 0) close(b->efd);
  b->efd = -1;
  b->state = SYNC_CLOSED;
  return 0;
}

static int sync_tostring(lua_State *L) {
  syncbox *b = check_sync(L);
  static const char *names[] = {"syncing", "synced", "failed", "closed"};
  lua_pushfstring(L, "sync (%s)", names[b->state]);
  return 1;
}

/* append_start(path, data) -> sync | nil, err. The file must exist (a
 * journal starts with write_file_atomic). A write that fails part-way is cut
 * off again and nothing is left running. */
static int l_append_start(lua_State *L) {
  size_t n, plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *s = luaL_checklstring(L, 2, &n);
  sigset_t all, old;
  int rc, e;
  syncbox *b = lua_newuserdatauv(L, sizeof *b + plen + 1, 0);
  memset(b, 0, sizeof *b);
  memcpy(b->path, path, plen + 1);
  b->fd = b->efd = -1;
  b->state = SYNC_CLOSED; /* until the thread runs: __gc has nothing to wait for */
  luaL_setmetatable(L, SYNC_MT);
  b->fd = ae_append_write(path, s, n, &b->size);
  if (b->fd < 0) goto fail;
  b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (b->efd < 0) {
    ae_append_undo(b->fd, b->size);
    goto fail;
  }
  /* The thread takes no signal: the watched ones stay with the main thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&b->th, NULL, sync_main, b);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) { /* no thread: sync here instead; the handle has ended */
    sync_main(b);
    finish(b);
    return 1;
  }
  b->joined = 1;
  b->state = SYNC_RUNNING;
  return 1;
fail:
  e = errno;
  if (b->fd >= 0) close(b->fd);
  b->fd = -1;
  luaL_pushfail(L);
  lua_pushfstring(L, "append %s: %s", path, strerror(e));
  return 2;
}

void ae_open_fs_sync(lua_State *L) {
  static const luaL_Reg methods[] = {{"done", sync_done},
                                     {"wait", sync_wait},
                                     {"fd", sync_fd},
                                     {"close", sync_close},
                                     {NULL, NULL}};
  ae_newclass(L, SYNC_MT, methods, sync_close, sync_tostring);
  lua_pushcfunction(L, l_append_start);
  lua_setfield(L, -2, "append_start");
}

/* Small file-system helpers the Lua side cannot do portably: a file's
 * permission bits (profile files must not be readable by others), mkdir -p,
 * whether a descriptor is a terminal (the runner's live view), atomic
 * file replacement, an advisory lock (one runner per state file),
 * chmod/umask (the engine's files are 0600 whatever they were), and the
 * state journal's synced appends (fs_sync.c syncs one on a thread). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

static int fail_errno(lua_State *L, const char *what, const char *path) {
  luaL_pushfail(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
  return 2;
}

/* file_mode(path) -> mode bits (integer), kind ("file", "directory", "fifo",
 * "socket", "char", "block"), or nil, err. The kind lets Lua tell a regular
 * file from a FIFO without opening it: open(2) on a FIFO blocks until a writer
 * comes, which in the engine's one thread would stop every request. */
static int l_file_mode(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return fail_errno(L, "stat", path);
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  const char *kind = S_ISREG(st.st_mode)    ? "file"
                     : S_ISDIR(st.st_mode)  ? "directory"
                     : S_ISFIFO(st.st_mode) ? "fifo"
                     : S_ISSOCK(st.st_mode) ? "socket"
                     : S_ISCHR(st.st_mode)  ? "char"
                     : S_ISBLK(st.st_mode)  ? "block"
                                            : "other";
  lua_pushstring(L, kind);
  return 2;
}

/* mkdir_p(path, mode?) -> true, or nil, err */
static int l_mkdir_p(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
  char buf[PATH_MAX];
  if (len == 0 || len >= sizeof buf) {
    luaL_pushfail(L);
    lua_pushfstring(L, "mkdir %s: path too long or empty", path);
    return 2;
  }
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, mode) != 0 && errno != EEXIST) return fail_errno(L, "mkdir", buf);
    *p = '/';
  }
  if (mkdir(buf, mode) != 0 && errno != EEXIST) return fail_errno(L, "mkdir", buf);
  lua_pushboolean(L, 1);
  return 1;
}

/* realpath(path) -> absolute path without symlinks, or nil, err */
static int l_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (realpath(path, buf) == NULL) return fail_errno(L, "realpath", path);
  lua_pushstring(L, buf);
  return 1;
}

/* chmod(path, mode) -> true, or nil, err */
static int l_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (chmod(path, (mode_t)luaL_checkinteger(L, 2)) != 0) return fail_errno(L, "chmod", path);
  lua_pushboolean(L, 1);
  return 1;
}

/* umask(mask) -> the previous mask */
static int l_umask(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)umask((mode_t)luaL_checkinteger(L, 1)));
  return 1;
}

/* isatty(fd) -> boolean */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}
/* term_columns(fd) -> columns | nil: a terminal's width, asked on every live
 * redraw (cheap, unlike spawning stty), so a resize is seen at the next frame. */
static int l_term_columns(lua_State *L) {
  struct winsize ws;
  if (ioctl((int)luaL_checkinteger(L, 1), TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, ws.ws_col);
  return 1;
}
static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Write what the producer function at stack index `fn` returns, call after
 * call, until it returns nil: 0, -1 (errno set) when a write fails, or -2
 * with the producer's error message (or a bad piece's) on the stack. */
static int write_pieces(lua_State *L, int fd, int fn) {
  for (;;) {
    size_t n;
    const char *s;
    lua_pushvalue(L, fn);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) return -2;
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pushfstring(L, "the producer returned a %s, not a string", luaL_typename(L, -1));
      return -2;
    }
    s = lua_tolstring(L, -1, &n);
    if (write_all(fd, s, n) != 0) return -1;
    lua_pop(L, 1);
  }
}

/* `data` (dlen bytes), or when it is NULL the pieces of the producer at
 * stack index 2: as write_pieces. */
static int write_data(lua_State *L, int fd, const char *data, size_t dlen) {
  return data ? write_all(fd, data, dlen) : write_pieces(L, fd, 2);
}

/* A failed producer (write_data's -2, its message on top): nil, message. */
static int producer_failed(lua_State *L, const char *where) {
  const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1) : "(an error object)";
  luaL_pushfail(L);
  lua_pushfstring(L, "write %s: %s", where, msg);
  return 2;
}

/* An existing path that is no regular file or directory (a device such as
 * /dev/null, a FIFO, /dev/stdout's pipe or terminal) is written in place: a
 * rename would replace the node itself, and as root that destroys /dev/null
 * for the whole machine. -> the number of results pushed, 0 for any other path. */
static int write_in_place(lua_State *L, const char *path, const char *data, size_t dlen) {
  struct stat st;
  int fd, e, wr;
  if (stat(path, &st) != 0 || S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return 0;
  fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
  wr = fd < 0 ? -1 : write_data(L, fd, data, dlen);
  if (wr == -2) {
    close(fd);
    return producer_failed(L, path);
  }
  if (wr != 0) {
    e = errno;
    if (fd >= 0) close(fd);
    luaL_pushfail(L);
    lua_pushfstring(L, "write %s: %s", path, strerror(e));
    return 2;
  }
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
}

/* write_file_atomic(path, data [, mode]) -> true | nil, err: a temporary file
 * beside path, fsync'd and renamed over it, so a reader sees the old or the
 * new content, never a torn one (state files, the engine's records). A
 * device or FIFO is written in place (write_in_place). `data` is a string,
 * or a function returning the next piece, then nil (like load's reader), so
 * a large document need not be one string in memory. */
static int l_write_file_atomic(lua_State *L) {
  size_t plen, dlen = 0;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = NULL;
  lua_Integer mode = luaL_optinteger(L, 3, 0600);
  const char *tmp, *slash, *what;
  int fd, e, wr;
  if (lua_type(L, 2) != LUA_TFUNCTION) data = luaL_checklstring(L, 2, &dlen);
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 3, "bad mode");
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "bad path");
  lua_settop(L, 3);
  if ((e = write_in_place(L, path, data, dlen)) != 0) return e;
  tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
  what = "open";
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
  if (fd < 0) goto fail_tmp;
  what = "chmod";
  if (fchmod(fd, (mode_t)mode) != 0) goto fail_fd;
  what = "write";
  wr = write_data(L, fd, data, dlen);
  if (wr == -2) {
    /* the producer failed: nothing replaces the file */
    close(fd);
    unlink(tmp);
    return producer_failed(L, tmp);
  }
  if (wr != 0) goto fail_fd;
  what = "fsync";
  if (fsync(fd) != 0) goto fail_fd;
  what = "close";
  if (close(fd) != 0) {
    fd = -1;
    goto fail_fd;
  }
  what = "rename";
  if (rename(tmp, path) != 0) {
    e = errno;
    unlink(tmp);
    luaL_pushfail(L);
    lua_pushfstring(L, "rename %s: %s", path, strerror(e));
    return 2;
  }
  /* Make the rename itself durable. */
  slash = strrchr(path, '/');
  {
    const char *dir = ".";
    int dfd;
    if (slash == path) dir = "/";
    else if (slash) {
      lua_pushlstring(L, path, (size_t)(slash - path));
      dir = lua_tostring(L, -1);
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
fail_fd:
  e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  errno = e;
fail_tmp:
  e = errno;
  luaL_pushfail(L);
  lua_pushfstring(L, "%s %s: %s", what, tmp, strerror(e));
  return 2;
}

/* Open `path` (existing, not a symlink) for appending and write all of s:
 * the descriptor, or -1 with errno. *size is the file's size before (-1 when
 * unknown); a write that fails part-way is cut off again (ae_append_undo). */
int ae_append_write(const char *path, const char *s, size_t n, off_t *size) {
  size_t done = 0;
  struct stat st;
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
  *size = -1;
  if (fd < 0) return -1;
  *size = fstat(fd, &st) == 0 ? st.st_size : -1;
  while (done < n) {
    ssize_t w = write(fd, s + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno ? errno : EIO;
      ae_append_undo(fd, *size);
      close(fd);
      errno = e;
      return -1;
    }
    done += (size_t)w;
  }
  return fd;
}

/* Cut an append off again (its write or sync failed); errno is kept. If even
 * that fails, the reader drops a torn last line. */
void ae_append_undo(int fd, off_t size) {
  int e = errno;
  if (size >= 0 && ftruncate(fd, size) != 0) { /* nothing more to do */
  }
  errno = e;
}

/* append_file(path, data) -> true | nil, err: data added at the end of an
 * existing file and synced (fdatasync) before it returns: a journal's record
 * (workflow/state.lua). A write that fails part-way is cut off again, so the
 * file never ends in half a record of ours. Not created: a journal starts
 * with write_file_atomic, so it is never seen without its first line. */
static int l_append_file(lua_State *L) {
  size_t n;
  const char *path = luaL_checkstring(L, 1);
  const char *s = luaL_checklstring(L, 2, &n);
  off_t size;
  int fd = ae_append_write(path, s, n, &size);
  if (fd < 0) return fail_errno(L, "append", path);
  if (fdatasync(fd) != 0) {
    int e = errno ? errno : EIO;
    ae_append_undo(fd, size);
    close(fd);
    errno = e;
    return fail_errno(L, "append", path);
  }
  if (close(fd) != 0) return fail_errno(L, "close", path);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- lock_file: flock(2) on a file, held while the handle lives -------------
 * The kernel drops the lock when the descriptor closes, including when the
 * process dies (kill -9), so a crash never leaves a stale lock. O_CLOEXEC:
 * a child (the local engine) must not inherit it and keep it after us. */
#define LOCK_MT "analytics_engine.Lock"

typedef struct {
  int fd; /* -1 once closed */
} lockbox;

static lockbox *check_lock(lua_State *L) {
  return (lockbox *)luaL_checkudata(L, 1, LOCK_MT);
}

static int lock_close(lua_State *L) {
  lockbox *b = check_lock(L);
  if (b->fd >= 0) {
    close(b->fd); /* releases the lock */
    b->fd = -1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* lock:write(text) -> true | nil, err: replaces the lock file's content (who
 * holds it), so a second runner can name the holder. */
static int lock_write(lua_State *L) {
  lockbox *b = check_lock(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (b->fd < 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (ftruncate(b->fd, 0) != 0 || pwrite(b->fd, s, n, 0) != (ssize_t)n) {
    luaL_pushfail(L);
    lua_pushfstring(L, "write lock file: %s", strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int lock_tostring(lua_State *L) {
  lockbox *b = check_lock(L);
  lua_pushfstring(L, "lock (%s)", b->fd >= 0 ? "held" : "closed");
  return 1;
}

/* lock_file(path [, "shared"]) -> lock | nil, err, "held": an exclusive (or
 * shared), non-blocking flock on path (created 0600 if missing). "held":
 * another open file holds it (exclusively, for a shared lock). */
static int l_lock_file(lua_State *L) {
  static const char *const modes[] = {"exclusive", "shared", NULL};
  const char *path = luaL_checkstring(L, 1);
  int op = luaL_checkoption(L, 2, "exclusive", modes) == 1 ? LOCK_SH : LOCK_EX;
  lockbox *b = (lockbox *)lua_newuserdatauv(L, sizeof *b, 0);
  b->fd = -1; /* closed until the lock is ours: __gc has nothing to undo */
  luaL_getmetatable(L, LOCK_MT);
  lua_setmetatable(L, -2);
  /* O_NOFOLLOW: a symlink planted in a shared directory must not make us
   * truncate and write the file it points to. */
  b->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (b->fd < 0 && errno == ELOOP) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s is a symbolic link (refused: it could point at any file)", path);
    return 2;
  }
  if (b->fd < 0) return fail_errno(L, "open", path);
  if (flock(b->fd, op | LOCK_NB) != 0) {
    int e = errno;
    close(b->fd);
    b->fd = -1;
    luaL_pushfail(L);
    if (e == EWOULDBLOCK) {
      lua_pushfstring(L, "%s is locked by another process", path);
      lua_pushliteral(L, "held");
      return 3;
    }
    lua_pushfstring(L, "lock %s: %s", path, strerror(e));
    return 2;
  }
  return 1;
}

static const luaL_Reg fs_funcs[] = {
    {"file_mode", l_file_mode},
    {"mkdir_p", l_mkdir_p},
    {"isatty", l_isatty},
    {"term_columns", l_term_columns},
    {"realpath", l_realpath},
    {"write_file_atomic", l_write_file_atomic},
    {"lock_file", l_lock_file},
    {"chmod", l_chmod},
    {"umask", l_umask},
    {"append_file", l_append_file},
    {NULL, NULL},
};

void ae_open_fs(lua_State *L) {
  static const luaL_Reg lock_methods[] = {
      {"write", lock_write}, {"close", lock_close}, {NULL, NULL}};
  ae_newclass(L, LOCK_MT, lock_methods, lock_close, lock_tostring);
  luaL_setfuncs(L, fs_funcs, 0);
}

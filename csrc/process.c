/* analytics_engine.core process and system helpers: spawn/wait/kill of child
 * process groups, clocks, sleep, random bytes, atomic file writes, SHA-256 and
 * HMAC-SHA-256, and async-signal-safe signal flags. No policy here. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ----------------------------------------------------------------- signals */

static const struct {
  const char *name;
  int sig;
} signames[] = {{"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                {"USR1", SIGUSR1}, {"USR2", SIGUSR2},   {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},
                {"TERM", SIGTERM}, {"CHLD", SIGCHLD},   {"CONT", SIGCONT}, {"STOP", SIGSTOP},
                {"TSTP", SIGTSTP}, {"WINCH", SIGWINCH}, {NULL, 0}};

static int signal_by_name(const char *name) {
  int i;
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (i = 0; signames[i].name; i++)
    if (strcmp(signames[i].name, name) == 0) return signames[i].sig;
  return -1;
}

/* Argument `arg`: a signal number or name ("TERM", "SIGTERM"). Raises when bad. */
static int check_signal(lua_State *L, int arg) {
  int sig;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    luaL_argcheck(L, n >= 0 && n < NSIG, arg, "bad signal number");
    return (int)n;
  }
  sig = signal_by_name(luaL_checkstring(L, arg));
  if (sig < 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", lua_tostring(L, arg)));
  return sig;
}

static volatile sig_atomic_t sig_flags[NSIG];
static volatile sig_atomic_t sig_count; /* bumped by every watched signal */

static void on_signal(int sig) {
  if (sig > 0 && sig < NSIG) sig_flags[sig] = 1;
  sig_count++;
}

/* How many watched signals have arrived (wrapping): server.c's poll loop
 * returns early when this changes while it waits. */
int ae_signal_count(void);
int ae_signal_count(void) {
  return (int)sig_count;
}

/* signal_watch{ "INT", "TERM" }: handlers that only set a flag. */
static int l_signal_watch(lua_State *L) {
  int n, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)lua_rawlen(L, 1);
  for (i = 1; i <= n; i++) { /* check them all before installing any */
    int sig;
    lua_rawgeti(L, 1, i);
    sig = check_signal(L, -1);
    luaL_argcheck(L, sig != SIGKILL && sig != SIGSTOP && sig != 0, 1, "signal cannot be caught");
    lua_pop(L, 1);
  }
  for (i = 1; i <= n; i++) {
    struct sigaction sa;
    int sig;
    lua_rawgeti(L, 1, i);
    sig = check_signal(L, -1);
    lua_pop(L, 1);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(sig, &sa, NULL) != 0) {
      int e = errno;
      luaL_pushfail(L);
      lua_pushfstring(L, "sigaction %d: %s", sig, strerror(e));
      return 2;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* The name of the first pending watched signal (cleared), or nil. */
static int l_signal_pending(lua_State *L) {
  int i;
  for (i = 0; signames[i].name; i++) {
    int sig = signames[i].sig;
    if (sig_flags[sig]) {
      sig_flags[sig] = 0;
      lua_pushstring(L, signames[i].name);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* ------------------------------------------------------------------ spawn */

/* A field of the spawn table that is a path: absolute, or relative to cwd. */
static const char *opt_path(lua_State *L, const char *field, const char *cwd) {
  const char *p = ae_optstrfield(L, 1, field, NULL);
  if (p && cwd && p[0] != '/') {
    lua_pushfstring(L, "%s/%s", cwd, p); /* kept on the stack until return */
    p = lua_tostring(L, -1);
  }
  return p;
}

static int spawn_fail(lua_State *L, const char *prog, const char *what, int e) {
  luaL_pushfail(L);
  if (what) lua_pushfstring(L, "spawn %s: %s: %s", prog, what, strerror(e));
  else lua_pushfstring(L, "spawn %s: %s", prog, strerror(e));
  return 2;
}

/* execvp's search, done in the parent so that a missing program is reported
 * the same way everywhere (posix_spawnp reports exec failures on glibc, but
 * not where it is emulated with fork, as under valgrind). 0 or an errno. */
static int find_program(const char *prog, const char *cwd) {
  const char *path, *p, *end;
  char buf[PATH_MAX];
  int err = ENOENT;
  struct stat st;
  if (!*prog) return ENOENT;
  if (strchr(prog, '/')) {
    if (prog[0] != '/' && cwd) {
      if (snprintf(buf, sizeof buf, "%s/%s", cwd, prog) >= (int)sizeof buf) return ENAMETOOLONG;
      prog = buf;
    }
    return access(prog, X_OK) == 0 ? 0 : errno;
  }
  path = getenv("PATH");
  if (!path) path = "/bin:/usr/bin";
  for (p = path;; p = end + 1) {
    size_t dl;
    int n;
    end = strchr(p, ':');
    if (!end) end = p + strlen(p);
    dl = (size_t)(end - p);
    if (dl == 0) n = snprintf(buf, sizeof buf, "%s/%s", cwd ? cwd : ".", prog);
    else if (p[0] != '/' && cwd) n = snprintf(buf, sizeof buf, "%s/%.*s/%s", cwd, (int)dl, p, prog);
    else n = snprintf(buf, sizeof buf, "%.*s/%s", (int)dl, p, prog);
    if (n > 0 && n < (int)sizeof buf && stat(buf, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(buf, X_OK) == 0) return 0;
      err = EACCES;
    }
    if (!*end) break;
  }
  return err;
}

static int l_spawn(lua_State *L) {
  const char **argv, **envp = NULL, *cwd, *paths[3], *prog;
  static const char *const fields[3] = {"stdin", "stdout", "stderr"};
  int fds[3] = {-1, -1, -1};
  int argc, envc = 0, i, rc, use_env;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t mask, defs;
  pid_t pid;
  struct stat st;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "argv"); /* 2 */
  luaL_argcheck(L, lua_istable(L, 2), 1, "field 'argv' must be a table");
  argc = (int)lua_rawlen(L, 2);
  luaL_argcheck(L, argc >= 1, 1, "field 'argv' must not be empty");
  lua_getfield(L, 1, "env"); /* 3 */
  use_env = !lua_isnil(L, 3);
  luaL_argcheck(L, !use_env || lua_istable(L, 3), 1, "field 'env' must be a table");
  if (use_env) envc = (int)lua_rawlen(L, 3);
  cwd = ae_optstrfield(L, 1, "cwd", NULL);
  for (i = 0; i < 3; i++) paths[i] = opt_path(L, fields[i], cwd);

  /* argv and envp live in userdata (collected with the rest) and point at
   * strings anchored in the argv/env tables. */
  argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(argc + 1), 0);
  lua_createtable(L, argc, 0); /* anchors the argv strings (numbers converted) */
  for (i = 0; i < argc; i++) {
    lua_rawgeti(L, 2, i + 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_argerror(L, 1, "argv entries must be strings");
    lua_tostring(L, -1);
    argv[i] = lua_tostring(L, -1);
    lua_rawseti(L, -2, i + 1);
  }
  argv[argc] = NULL;
  prog = argv[0];
  if (use_env) {
    envp = lua_newuserdatauv(L, sizeof(char *) * (size_t)(envc + 1), 0);
    for (i = 0; i < envc; i++) {
      lua_rawgeti(L, 3, i + 1);
      if (lua_type(L, -1) != LUA_TSTRING || !strchr(lua_tostring(L, -1), '='))
        luaL_argerror(L, 1, "env entries must be \"NAME=value\" strings");
      envp[i] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
    envp[envc] = NULL;
  }

  /* Check what can be checked here, for a precise message. */
  if (cwd) {
    int e = 0;
    if (stat(cwd, &st) != 0) e = errno;
    else if (!S_ISDIR(st.st_mode)) e = ENOTDIR;
    if (e) return spawn_fail(L, prog, lua_pushfstring(L, "cwd %s", cwd), e);
  }
  rc = find_program(prog, cwd);
  if (rc != 0) return spawn_fail(L, prog, NULL, rc);
  for (i = 0; i < 3; i++) {
    const char *p = paths[i] ? paths[i] : "/dev/null";
    int flags = i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND;
    fds[i] = open(p, flags | O_CLOEXEC | O_NOCTTY, 0600);
    if (fds[i] < 0) {
      int e = errno, j;
      for (j = 0; j < i; j++) close(fds[j]);
      return spawn_fail(L, prog, lua_pushfstring(L, "%s %s", fields[i], p), e);
    }
  }

  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  rc = 0;
  for (i = 0; i < 3 && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
  if (rc == 0 && cwd) rc = posix_spawn_file_actions_addchdir_np(&fa, cwd);
#else
  if (rc == 0 && cwd) rc = ENOSYS;
#endif
  sigemptyset(&mask);
  sigemptyset(&defs);
  for (i = 0; signames[i].name; i++)
    if (signames[i].sig != SIGKILL && signames[i].sig != SIGSTOP) sigaddset(&defs, signames[i].sig);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &mask);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defs);
#ifdef POSIX_SPAWN_SETSID
  if (rc == 0)
    rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                             POSIX_SPAWN_SETSIGDEF);
#else
  if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
  if (rc == 0)
    rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                             POSIX_SPAWN_SETSIGDEF);
#endif
  if (rc == 0)
    rc = posix_spawnp(&pid, prog, &fa, &attr, (char *const *)argv,
                      use_env ? (char *const *)envp : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  for (i = 0; i < 3; i++) close(fds[i]);
  if (rc != 0) return spawn_fail(L, prog, NULL, rc);
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

static pid_t check_pid(lua_State *L, int arg) {
  lua_Integer pid = luaL_checkinteger(L, arg);
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, arg, "pid must be a positive integer");
  return (pid_t)pid;
}

/* wait(pid) -> nil (running) | "exited", code | "signaled", sig | false, err */
static int l_wait(lua_State *L) {
  pid_t pid = check_pid(L, 1), r;
  int st = 0;
  do r = waitpid(pid, &st, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (r < 0) {
    lua_pushboolean(L, 0);
    if (errno == ECHILD) lua_pushliteral(L, "no such child");
    else lua_pushstring(L, strerror(errno));
    return 2;
  }
  if (WIFEXITED(st)) {
    lua_pushliteral(L, "exited");
    lua_pushinteger(L, WEXITSTATUS(st));
  } else if (WIFSIGNALED(st)) {
    lua_pushliteral(L, "signaled");
    lua_pushinteger(L, WTERMSIG(st));
  } else { /* not asked for (no WUNTRACED), but be total */
    lua_pushliteral(L, "stopped");
    lua_pushinteger(L, WIFSTOPPED(st) ? WSTOPSIG(st) : 0);
  }
  return 2;
}

/* kill(pid, sig): the whole process group, else the process alone. */
static int l_kill(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  int sig = lua_isnoneornil(L, 2) ? SIGTERM : check_signal(L, 2);
  if (kill(-pid, sig) == 0 || kill(pid, sig) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  {
    int e = errno;
    luaL_pushfail(L);
    lua_pushfstring(L, "kill %d: %s", (int)pid, strerror(e));
    return 2;
  }
}

/* ----------------------------------------------------------- time, random */

static int l_monotime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int l_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000) * 1e-6);
  return 1;
}

/* sleep(seconds): returns early (false) when a watched signal arrives. */
static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec ts, rem;
  int seen = ae_signal_count();
  if (!(s > 0)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (s > 1e9) s = 1e9;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
  while (nanosleep(&ts, &rem) != 0 && errno == EINTR) {
    if (ae_signal_count() != seen) {
      lua_pushboolean(L, 0);
      return 1;
    }
    ts = rem;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  size_t done = 0;
  char *p;
  luaL_argcheck(L, n >= 0 && n <= 16 * 1024 * 1024, 1, "size out of range");
#if LUA_VERSION_NUM >= 502
  p = luaL_buffinitsize(L, &b, (size_t)n);
#else
  luaL_buffinit(L, &b);
  p = NULL;
#endif
  while (done < (size_t)n) {
    char tmp[256];
    char *dst;
    size_t want = (size_t)n - done;
    ssize_t got;
#if LUA_VERSION_NUM >= 502
    dst = p + done;
#else
    if (want > sizeof tmp) want = sizeof tmp;
    dst = tmp;
#endif
    got = getrandom(dst, want, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return luaL_error(L, "getrandom: %s", strerror(errno));
    }
#if LUA_VERSION_NUM < 502
    luaL_addlstring(&b, tmp, (size_t)got);
#else
    (void)tmp;
#endif
    done += (size_t)got;
  }
#if LUA_VERSION_NUM >= 502
  luaL_pushresultsize(&b, (size_t)n);
#else
  (void)p;
  luaL_pushresult(&b);
#endif
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* ------------------------------------------------------ write_file_atomic */

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

static int l_write_file_atomic(lua_State *L) {
  size_t plen, dlen;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &dlen);
  lua_Integer mode = luaL_optinteger(L, 3, 0600);
  const char *tmp, *slash, *what;
  int fd, e;
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 3, "bad mode");
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "bad path");
  tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
  what = "open";
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
  if (fd < 0) goto fail_tmp;
  what = "chmod";
  if (fchmod(fd, (mode_t)mode) != 0) goto fail_fd;
  what = "write";
  if (write_all(fd, data, dlen) != 0) goto fail_fd;
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

/* ---------------------------------------------------------------- SHA-256 */

typedef struct {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t n;
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const unsigned char *p) {
  uint32_t w[64], a, b, cc, d, e, f, g, h, t1, t2;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3];
  e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
  for (i = 0; i < 64; i++) {
    t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g, g = f, f = e, e = d + t1;
    d = cc, cc = b, b = a, a = t1 + t2;
  }
  c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
  c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_init(sha256_ctx *c) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, iv, sizeof iv);
  c->len = 0;
  c->n = 0;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t len) {
  const unsigned char *p = data;
  c->len += len;
  if (c->n) {
    size_t k = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, k);
    c->n += k, p += k, len -= k;
    if (c->n < 64) return;
    sha256_block(c, c->buf);
    c->n = 0;
  }
  for (; len >= 64; p += 64, len -= 64) sha256_block(c, p);
  memcpy(c->buf, p, len);
  c->n = len;
}

static void sha256_final(sha256_ctx *c, unsigned char out[32]) {
  uint64_t bits = c->len * 8;
  int i;
  c->buf[c->n++] = 0x80;
  if (c->n > 56) {
    memset(c->buf + c->n, 0, 64 - c->n);
    sha256_block(c, c->buf);
    c->n = 0;
  }
  memset(c->buf + c->n, 0, 56 - c->n);
  for (i = 0; i < 8; i++) c->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_block(c, c->buf);
  for (i = 0; i < 8; i++) {
    out[4 * i] = (unsigned char)(c->h[i] >> 24);
    out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
    out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
    out[4 * i + 3] = (unsigned char)c->h[i];
  }
}

static int l_sha256(lua_State *L) {
  size_t n;
  const char *d = luaL_checklstring(L, 1, &n);
  sha256_ctx c;
  unsigned char out[32];
  sha256_init(&c);
  sha256_update(&c, d, n);
  sha256_final(&c, out);
  lua_pushlstring(L, (const char *)out, 32);
  return 1;
}

static int l_hmac_sha256(lua_State *L) {
  size_t kl, dl, i;
  const char *key = luaL_checklstring(L, 1, &kl);
  const char *data = luaL_checklstring(L, 2, &dl);
  unsigned char k[64], pad[64], inner[32], out[32];
  sha256_ctx c;
  memset(k, 0, sizeof k);
  if (kl > 64) {
    sha256_init(&c);
    sha256_update(&c, key, kl);
    sha256_final(&c, k);
  } else {
    memcpy(k, key, kl);
  }
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  sha256_init(&c);
  sha256_update(&c, pad, 64);
  sha256_update(&c, data, dl);
  sha256_final(&c, inner);
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  sha256_init(&c);
  sha256_update(&c, pad, 64);
  sha256_update(&c, inner, 32);
  sha256_final(&c, out);
  lua_pushlstring(L, (const char *)out, 32);
  return 1;
}

void ae_open_process(lua_State *L) {
  static const luaL_Reg funcs[] = {{"spawn", l_spawn},
                                   {"wait", l_wait},
                                   {"kill", l_kill},
                                   {"monotime", l_monotime},
                                   {"time", l_time},
                                   {"sleep", l_sleep},
                                   {"random_bytes", l_random_bytes},
                                   {"getpid", l_getpid},
                                   {"write_file_atomic", l_write_file_atomic},
                                   {"sha256", l_sha256},
                                   {"hmac_sha256", l_hmac_sha256},
                                   {"signal_watch", l_signal_watch},
                                   {"signal_pending", l_signal_pending},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}

/* analytics_engine.core processes: spawn/wait/kill of child process groups and
 * async-signal-safe signal flags. No policy here. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
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
static volatile sig_atomic_t sig_count;     /* bumped by every watched signal */
static volatile sig_atomic_t child_watched; /* SIGCHLD has our handler */
static volatile sig_atomic_t child_count;   /* SIGCHLDs received (wrapping) */
static sig_atomic_t child_seen;             /* child_count at the last child_exited() */

static void on_signal(int sig) {
  if (sig == SIGCHLD) child_count++; /* a counter: read once, nothing is lost */
  else if (sig > 0 && sig < NSIG) sig_flags[sig] = 1;
  sig_count++;
}

/* How many watched signals have arrived (wrapping): the server's poll loop
 * returns early when this changes while it waits. */
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
    sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    if (sigaction(sig, &sa, NULL) != 0) {
      int e = errno;
      luaL_pushfail(L);
      lua_pushfstring(L, "sigaction %d: %s", sig, strerror(e));
      return 2;
    }
    if (sig == SIGCHLD) child_watched = 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* The name of the first pending watched signal (cleared), or nil. SIGCHLD
 * is not one: a child ending asks nothing of the caller's loop but a look
 * at its children (child_exited). */
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

/* child_exited() -> true when a child ended (SIGCHLD arrived) since the last
 * call, else false; nil while SIGCHLD is not watched (signal_watch{ "CHLD" }):
 * then the caller cannot know and must look at its children itself. */
static int l_child_exited(lua_State *L) {
  if (!child_watched) {
    lua_pushnil(L);
    return 1;
  }
  {
    sig_atomic_t now = child_count;
    lua_pushboolean(L, now != child_seen);
    child_seen = now;
  }
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

/* execvp's search, done in the parent (the child may only make
 * async-signal-safe calls): the program's path into `out`; 0 or an errno. */
static int find_program(const char *prog, const char *cwd, char out[PATH_MAX]) {
  const char *path, *p, *end;
  int err = ENOENT;
  struct stat st;
  if (!*prog) return ENOENT;
  if (strchr(prog, '/')) {
    int n = prog[0] != '/' && cwd ? snprintf(out, PATH_MAX, "%s/%s", cwd, prog)
                                  : snprintf(out, PATH_MAX, "%s", prog);
    if (n < 0 || n >= PATH_MAX) return ENAMETOOLONG;
    return access(out, X_OK) == 0 ? 0 : errno;
  }
  path = getenv("PATH");
  if (!path) path = "/bin:/usr/bin";
  for (p = path;; p = end + 1) {
    size_t dl;
    int n;
    end = strchr(p, ':');
    if (!end) end = p + strlen(p);
    dl = (size_t)(end - p);
    if (dl == 0) n = snprintf(out, PATH_MAX, "%s/%s", cwd ? cwd : ".", prog);
    else if (p[0] != '/' && cwd) n = snprintf(out, PATH_MAX, "%s/%.*s/%s", cwd, (int)dl, p, prog);
    else n = snprintf(out, PATH_MAX, "%.*s/%s", (int)dl, p, prog);
    if (n > 0 && n < PATH_MAX && stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(out, X_OK) == 0) return 0;
      err = EACCES;
    }
    if (!*end) break;
  }
  return err;
}

/* Close every descriptor from 3 up but `keep` (the exec-failure pipe, itself
 * O_CLOEXEC): the engine's sockets and files are none of the child's. */
static void close_others(int keep) {
  int fd;
#ifdef SYS_close_range
  if ((keep == 3 || syscall(SYS_close_range, 3, keep - 1, 0) == 0) &&
      syscall(SYS_close_range, keep + 1, ~0U, 0) == 0)
    return;
#endif
  for (fd = 3; fd < 4096; fd++)
    if (fd != keep) close(fd);
}

/* The child between clone and exec. It shares the engine's memory
 * (CLONE_VM | CLONE_VFORK, as posix_spawn does): async-signal-safe calls
 * only, on a stack of its own, writing nothing but its own locals. A fork
 * copied the engine's page tables and left its every page copy-on-write:
 * ~1.7 ms a launch with 2,000 applications running, growing with the heap.
 * Its own session and process group; with `deathsig`, that signal when the
 * engine dies, even by SIGKILL (posix_spawn cannot ask for it). An exec
 * failure's errno goes back through `errfd`. Not instrumented: ASan would
 * poison redzones on the borrowed stack and never unpoison them (the frame
 * does not return). */
struct child_args {
  const char *path, *cwd;
  char *const *argv, *const *envp;
  const int *fds;
  int deathsig, errfd;
  pid_t parent;
};

__attribute__((no_sanitize("address"))) static int child_exec(void *p) {
  const struct child_args *a = p;
  struct sigaction dfl, old;
  sigset_t none;
  int i, e;
  setsid();
#ifdef PR_SET_PDEATHSIG
  if (a->deathsig && (prctl(PR_SET_PDEATHSIG, a->deathsig) != 0 || getppid() != a->parent))
    _exit(127);
#endif
  for (i = 0; i < 3; i++) {
    if (a->fds[i] == i) fcntl(i, F_SETFD, 0); /* dup2 onto itself keeps O_CLOEXEC */
    else if (dup2(a->fds[i], i) < 0) goto fail;
  }
  close_others(a->errfd);
  /* Every caught signal back to its default before any is unblocked: a
   * handler must not run here, on the engine's memory. The named ones
   * (ignored ones too) as before; ignored others stay ignored over exec. */
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (i = 1; i < NSIG; i++) {
    if (i == SIGKILL || i == SIGSTOP || sigaction(i, NULL, &old) != 0) continue;
    if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) sigaction(i, &dfl, NULL);
  }
  for (i = 0; signames[i].name; i++)
    if (signames[i].sig != SIGKILL && signames[i].sig != SIGSTOP)
      sigaction(signames[i].sig, &dfl, NULL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (a->cwd && chdir(a->cwd) != 0) goto fail;
  execve(a->path, a->argv, a->envp);
fail:
  e = errno;
  if (write(a->errfd, &e, sizeof e) < 0) _exit(126);
  _exit(127);
}

/* `fd` moved above the standard descriptors (close-on-exec), or -1 and errno.
 * An engine started with stdin, stdout or stderr closed gets 0-2 from open or
 * pipe2: the child's dup2 onto 0-2 would then overwrite one of its own files
 * or the exec-failure pipe. */
static int above_stdio(int fd) {
  int high, e;
  if (fd < 0 || fd > 2) return fd;
  high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  e = errno;
  close(fd);
  errno = e;
  return high;
}

/* The child's stack: it runs only child_exec and the system calls' wrappers
 * (under ASan, their interceptors). */
#define CHILD_STACK (256 * 1024)

/* clone + exec -> 0 and *pid, or an errno (the exec's when it failed). The
 * engine is suspended until the child has exec'd or failed. */
static int start_child(const char *path, char *const argv[], char *const envp[], const int fds[3],
                       const char *cwd, int deathsig, pid_t *pid) {
  struct child_args a;
  sigset_t all, old;
  int pfd[2], e = 0;
  ssize_t n;
  char *stack;
  if (pipe2(pfd, O_CLOEXEC) != 0) return errno;
  pfd[0] = above_stdio(pfd[0]);
  pfd[1] = above_stdio(pfd[1]);
  if (pfd[0] < 0 || pfd[1] < 0) {
    e = errno;
    if (pfd[0] >= 0) close(pfd[0]);
    if (pfd[1] >= 0) close(pfd[1]);
    return e;
  }
  stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
               -1, 0);
  if (stack == MAP_FAILED) {
    e = errno;
    close(pfd[0]);
    close(pfd[1]);
    return e;
  }
  a.path = path;
  a.cwd = cwd;
  a.argv = argv;
  a.envp = envp;
  a.fds = fds;
  a.deathsig = deathsig;
  a.errfd = pfd[1];
  a.parent = getpid();
  /* No handler may run in the child before it resets them (it shares our
   * memory): it starts with every signal blocked. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  *pid = clone(child_exec, stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
  if (*pid < 0) e = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  munmap(stack, CHILD_STACK);
  close(pfd[1]);
  if (*pid < 0) {
    close(pfd[0]);
    return e;
  }
  do n = read(pfd[0], &e, sizeof e);
  while (n < 0 && errno == EINTR);
  close(pfd[0]);
  if (n == (ssize_t)sizeof e) { /* exec failed: reap the child */
    while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return e ? e : ECHILD;
  }
  return 0;
}

static int l_spawn(lua_State *L) {
  const char **argv, **envp = NULL, *cwd, *paths[3], *prog, *deathname;
  static const char *const fields[3] = {"stdin", "stdout", "stderr"};
  int fds[3] = {-1, -1, -1};
  int argc, envc = 0, i, rc, use_env, deathsig = 0;
  char path[PATH_MAX];
  pid_t pid = -1;
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
  deathname = ae_optstrfield(L, 1, "die_with_parent", NULL);
  if (deathname) {
    deathsig = signal_by_name(deathname);
    luaL_argcheck(L, deathsig > 0, 1,
                  "field 'die_with_parent' must be a signal name such as \"KILL\"");
  }

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
  rc = find_program(prog, cwd, path);
  if (rc != 0) return spawn_fail(L, prog, NULL, rc);
  for (i = 0; i < 3; i++) {
    const char *p = paths[i] ? paths[i] : "/dev/null";
    int flags = i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND;
    fds[i] = above_stdio(open(p, flags | O_CLOEXEC | O_NOCTTY, 0600));
    if (fds[i] < 0) {
      int e = errno, j;
      for (j = 0; j < i; j++) close(fds[j]);
      return spawn_fail(L, prog, lua_pushfstring(L, "%s %s", fields[i], p), e);
    }
  }

  rc = start_child(path, (char *const *)argv, use_env ? (char *const *)envp : environ, fds, cwd,
                   deathsig, &pid);
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

/* kill(pid, sig, group_only): the whole process group, else (unless
 * group_only) the process alone. */
static int l_kill(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  int sig = lua_isnoneornil(L, 2) ? SIGTERM : check_signal(L, 2);
  /* group_only: the leader is gone (reaped), its pid may be another
   * process's by now; the group's id cannot be reused while it has members */
  int group_only = lua_toboolean(L, 3);
  if (kill(-pid, sig) == 0 || (!group_only && kill(pid, sig) == 0)) {
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

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

void ae_open_process(lua_State *L) {
  static const luaL_Reg funcs[] = {{"spawn", l_spawn},
                                   {"wait", l_wait},
                                   {"kill", l_kill},
                                   {"getpid", l_getpid},
                                   {"signal_watch", l_signal_watch},
                                   {"signal_pending", l_signal_pending},
                                   {"child_exited", l_child_exited},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}

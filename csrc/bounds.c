/* Bounds for code the host does not trust (a workflow file while it loads).
 * A Lua count hook cannot see inside one C call: `s .. s` or `table.concat`
 * can ask for gigabytes between two hooks, and `string.find` with a
 * backtracking pattern can run for years without returning. So:
 *
 *   memory_limit(bytes)   caps this Lua state's heap: past it an allocation
 *                         fails, which Lua raises as "not enough memory"
 *                         (after a full collection). memory_limit(nil) lifts it.
 *   hard_deadline(s, msg) arms a last-resort timer: if it fires, msg goes to
 *                         stderr and the process exits 2. Only for a one-shot
 *                         command (aeflow validate/plan/graph/run) whose own
 *                         time bound could not stop a C call in time.
 *                         hard_deadline(nil) disarms it. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "core.h"

struct memcap {
  lua_Alloc orig;
  void *orig_ud;
  size_t used;  /* bytes this state holds (Lua's own count when installed) */
  size_t limit; /* at most this many */
};

static const char MEMCAP_KEY = 'm'; /* registry key: the installed cap */

static void memcap_key(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&MEMCAP_KEY);
}

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct memcap *m = ud;
  size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
  void *p;
  if (nsize > old && nsize - old > m->limit - (m->used < m->limit ? m->used : m->limit))
    return NULL;
  p = m->orig(m->orig_ud, ptr, osize, nsize);
  if (p != NULL || nsize == 0) {
    m->used = m->used >= old ? m->used - old : 0;
    m->used += nsize;
  }
  return p;
}

static size_t heap_bytes(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* memory_limit(bytes|nil) -> true */
static int l_memory_limit(lua_State *L) {
  struct memcap *m;
  memcap_key(L);
  lua_rawget(L, LUA_REGISTRYINDEX);
  m = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lua_isnoneornil(L, 1)) {
    if (m != NULL) {
      lua_setallocf(L, m->orig, m->orig_ud);
      memcap_key(L);
      lua_pushnil(L);
      lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_Integer limit = luaL_checkinteger(L, 1);
  luaL_argcheck(L, limit > 0, 1, "a positive number of bytes");
  if (m == NULL) {
    memcap_key(L);
    m = lua_newuserdatauv(L, sizeof *m, 0);
    m->orig = lua_getallocf(L, &m->orig_ud);
    lua_rawset(L, LUA_REGISTRYINDEX); /* kept while installed */
    m->used = heap_bytes(L);
    m->limit = (size_t)limit;
    lua_setallocf(L, capped_alloc, m);
  } else {
    m->used = heap_bytes(L);
    m->limit = (size_t)limit;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static char deadline_msg[512];
static size_t deadline_len;
static struct sigaction deadline_old; /* SIGALRM's handler before arming */
static int deadline_armed;

static void on_deadline(int sig) {
  (void)sig;
  ssize_t w = write(STDERR_FILENO, deadline_msg, deadline_len);
  (void)w;
  _exit(2);
}

/* hard_deadline(seconds|nil [, message]) -> true */
static int l_hard_deadline(lua_State *L) {
  struct itimerval it;
  struct sigaction sa;
  memset(&it, 0, sizeof it);
  if (lua_isnoneornil(L, 1)) {
    setitimer(ITIMER_REAL, &it, NULL);
    if (deadline_armed) sigaction(SIGALRM, &deadline_old, NULL);
    deadline_armed = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_Number s = luaL_checknumber(L, 1);
  size_t len;
  const char *msg = luaL_optlstring(L, 2, "took too long\n", &len);
  luaL_argcheck(L, s > 0 && s < 1e6, 1, "seconds in (0, 1e6)");
  if (len > sizeof deadline_msg) len = sizeof deadline_msg;
  memcpy(deadline_msg, msg, len);
  deadline_len = len;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_deadline;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGALRM, &sa, deadline_armed ? NULL : &deadline_old) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  deadline_armed = 1;
  it.it_value.tv_sec = (time_t)s;
  it.it_value.tv_usec = (suseconds_t)((s - (lua_Number)it.it_value.tv_sec) * 1e6);
  setitimer(ITIMER_REAL, &it, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

void ae_open_bounds(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"memory_limit", l_memory_limit}, {"hard_deadline", l_hard_deadline}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}

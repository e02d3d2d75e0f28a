/* aeflow: the runner. Embeds Lua 5.4 with analytics_engine.core linked in and
 * hands argv to analytics_engine.cli, in the shape of lua.c: everything runs
 * under lua_pcall with a traceback handler; exit non-zero on error. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "core.h"

#ifndef AE_LUADIR
#define AE_LUADIR "/usr/local/share/lua/5.4"
#endif

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The directory holding this executable, so an in-tree build and an
 * installed one both find their Lua modules without configuration. */
static void exe_dir(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n <= 0) {
    buf[0] = '\0';
    return;
  }
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash) *slash = '\0';
}

static void set_paths(lua_State *L, const char *dir) {
  lua_getglobal(L, "package");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  const char *env = getenv("AEFLOW_LUA_PATH");
  if (env && *env) {
    luaL_addstring(&b, env);
    luaL_addchar(&b, ';');
  }
  lua_pushfstring(L,
                  "%s/../lua/?.lua;%s/../lua/?/init.lua;%s/../share/lua/5.4/?.lua;"
                  "%s/../share/lua/5.4/?/init.lua;" AE_LUADIR "/?.lua;" AE_LUADIR "/?/init.lua;",
                  dir, dir, dir, dir);
  luaL_addvalue(&b);
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

static void preload_core(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_analytics_engine_core);
  lua_setfield(L, -2, "analytics_engine.core");
  lua_pop(L, 2);
}

static int run(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  char dir[PATH_MAX];
  luaL_openlibs(L);
  exe_dir(dir, sizeof dir);
  set_paths(L, dir);
  preload_core(L);

  lua_getglobal(L, "require");
  lua_pushliteral(L, "analytics_engine.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  char exe[PATH_MAX + 8];
  snprintf(exe, sizeof exe, "%s/%s", dir, "aeflow");
  lua_pushstring(L, dir[0] ? exe : argv[0]);
  lua_call(L, 2, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "aeflow: cannot create Lua state: not enough memory\n");
    return 1;
  }
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, run);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code = 0;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "aeflow: internal error: %s\n", msg ? msg : "(no message)");
    code = 1;
  } else if (lua_isinteger(L, -1)) {
    code = (int)lua_tointeger(L, -1);
  } else if (lua_isboolean(L, -1)) {
    code = lua_toboolean(L, -1) ? 0 : 1;
  }
  fflush(stdout);
  lua_close(L);
  return code;
}

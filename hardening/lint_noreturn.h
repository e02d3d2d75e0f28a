/* Included (-include) only by `make lint-c`: the Lua API's error functions
 * never return, but their headers do not say so, and without this the
 * clang static analyzer follows impossible paths past every luaL_argerror. */
#ifndef AE_LINT_NORETURN_H
#define AE_LINT_NORETURN_H
#include <lua.h>
#include <lauxlib.h>
__attribute__((noreturn)) int lua_error(lua_State *L);
__attribute__((noreturn)) int luaL_error(lua_State *L, const char *fmt, ...);
__attribute__((noreturn)) int luaL_argerror(lua_State *L, int arg, const char *extramsg);
__attribute__((noreturn)) int luaL_typeerror(lua_State *L, int arg, const char *tname);
#endif

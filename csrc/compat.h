/* One place for the differences between Lua 5.1/LuaJIT and Lua 5.4. */
#ifndef AE_COMPAT_H
#define AE_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#ifndef luaL_newlib /* LuaJIT 2.1 has these 5.2 additions; plain 5.1 has not */
#define AE_LUA51_AUX 1
#define luaL_newlib(L, l) (lua_newtable(L), luaL_register((L), NULL, (l)))
#endif
#ifdef AE_LUA51_AUX
static inline void ae_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#define luaL_setfuncs ae_setfuncs
static inline void *ae_testudata(lua_State *L, int ud, const char *tname) {
  void *p = lua_touserdata(L, ud);
  if (p != NULL && lua_getmetatable(L, ud)) {
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2)) p = NULL;
    lua_pop(L, 2);
    return p;
  }
  return NULL;
}
#define luaL_testudata ae_testudata
#endif
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
#define luaL_pushfail(L) lua_pushnil(L)
/* 5.1 numbers are doubles: "integer" means a number with an integral value. */
static inline int ae_isinteger(lua_State *L, int i) {
  lua_Number n;
  if (lua_type(L, i) != LUA_TNUMBER) return 0;
  n = lua_tonumber(L, i);
  return n >= -9007199254740992.0 && n <= 9007199254740992.0 && n == (lua_Number)(lua_Integer)n;
}
#define lua_isinteger ae_isinteger
#elif LUA_VERSION_NUM < 504
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
#define luaL_pushfail(L) lua_pushnil(L)
#endif

/* Register a handle type: metatable `tname` with methods in __index, and
 * __gc/__close both bound to `gc`. */
static inline void ae_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                               lua_CFunction gc, lua_CFunction tostring) {
  if (!luaL_newmetatable(L, tname)) { /* made already (the core opened again): keep it */
    lua_pop(L, 1);
    return;
  }
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__close");
  if (tostring) {
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

/* t[k] = v helpers for building result tables (table at top of stack). */
static inline void ae_setstr(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}
static inline void ae_setint(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}
static inline void ae_setnum(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

/* Optional field of the table at `idx`: number/string/boolean with default. */
static inline lua_Number ae_optnumfield(lua_State *L, int idx, const char *k, lua_Number def) {
  lua_Number v = def;
  lua_getfield(L, idx, k);
  if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1)) luaL_error(L, "field '%s' must be a number", k);
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}
static inline int ae_optboolfield(lua_State *L, int idx, const char *k, int def) {
  int v = def;
  lua_getfield(L, idx, k);
  if (!lua_isnil(L, -1)) v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}
/* Returns a pointer valid while the table at idx holds the string. */
static inline const char *ae_optstrfield(lua_State *L, int idx, const char *k, size_t *len) {
  const char *s = NULL;
  lua_getfield(L, idx, k);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "field '%s' must be a string", k);
    s = lua_tolstring(L, -1, len);
  } else if (len) {
    *len = 0;
  }
  lua_pop(L, 1);
  return s;
}

#endif

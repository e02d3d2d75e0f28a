/* Shared by the libFuzzer targets: a Lua 5.4 state with analytics_engine.core
 * linked in (the instrumented build-fuzz objects) and the Lua modules of this
 * source tree on package.path. */
#ifndef AE_FUZZ_COMMON_H
#define AE_FUZZ_COMMON_H
#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* A new state; aborts on failure (a broken harness must not look like a find). */
lua_State *fuzz_lua_state(void);
/* Run a chunk; aborts with its message on error. */
void fuzz_lua_do(lua_State *L, const char *chunk);
/* Call global function `fn` with one string argument under pcall; aborts on a
 * Lua error (every error the core may raise on network input is a bug). */
void fuzz_lua_call(lua_State *L, const char *fn, const char *arg, size_t len);
#endif

/* Internal interface between the parts of analytics_engine.core. Each part
 * adds its functions to the module table at the top of the stack. */
#ifndef AE_CORE_H
#define AE_CORE_H
#include "compat.h"

#define AE_CORE_VERSION "0.1.0"

void ae_open_http(lua_State *L);      /* http.c: http_session */
void ae_open_server(lua_State *L);    /* server.c: http_server */
void ae_open_process(lua_State *L);   /* process.c: spawn, wait, kill, clock, random */
void ae_open_fs(lua_State *L);        /* fs.c: file_mode, mkdir_p, realpath, isatty */
void ae_open_websocket(lua_State *L); /* websocket.c: ws_connect (wslay) */
void ae_open_sqlite(lua_State *L);    /* sqlite.c: sqlite_open */

int luaopen_analytics_engine_core(lua_State *L);
#endif

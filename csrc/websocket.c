/* WebSocket client on libcurl CONNECT_ONLY with wslay framing: not yet. */
#include "core.h"

void ae_open_websocket(lua_State *L) { (void)L; }

/* SQLite binding for the local engine's store: not yet. */
#include "core.h"

void ae_open_sqlite(lua_State *L) { (void)L; }

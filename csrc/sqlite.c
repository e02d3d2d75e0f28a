/* SQLite binding for the local engine's store, in the lauxlib style.
 *
 *   db = core.sqlite_open(path [, {busy_timeout = ms, readonly = bool}])  -> Db | nil, err
 *   db:exec(sql)                  several statements, no results       -> true | nil, err
 *   db:run(sql, ...)              one statement with bound values      -> changes | nil, err
 *   db:query(sql, ...)            every row as {column = value}        -> rows | nil, err
 *   for a, b in db:rows(sql, ...) one row at a time (raises on error)
 *   st = db:prepare(sql)                                              -> Stmt | nil, err
 *   st:bind(...)  st:step() -> true (row) | false (done) | nil, err
 *   st:values() -> the row's values  st:reset()  st:close()
 *   db:changes()  db:last_insert_rowid()  db:in_transaction()  db:close()
 *
 * Values: nil <-> NULL, integer, float, string <-> TEXT/BLOB, booleans bind as 0/1.
 * No policy here: pragmas (WAL, synchronous) are the caller's. The database
 * closes with sqlite3_close_v2, so statements may outlive an explicit close
 * (they then answer nil, "closed") and the collector may finalize them in
 * any order. */
#include <sqlite3.h>
#include <string.h>

#include "core.h"

#define DB_MT "analytics_engine.SqliteDb"
#define STMT_MT "analytics_engine.SqliteStmt"

typedef struct {
  sqlite3 *db;
} db_t;

typedef struct {
  sqlite3_stmt *st;
  db_t *owner; /* valid while st is: the uservalue keeps the Db alive */
  int done;    /* last step returned SQLITE_DONE */
} stmt_t;

/* nil, "sqlite: <message>" as a one-line error. */
static int fail_db(lua_State *L, sqlite3 *db, const char *what) {
  const char *m = db ? sqlite3_errmsg(db) : "out of memory";
  luaL_pushfail(L);
  if (what) lua_pushfstring(L, "sqlite: %s: %s", what, m);
  else lua_pushfstring(L, "sqlite: %s", m);
  return 2;
}

static int fail_closed(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static db_t *check_db(lua_State *L) {
  return luaL_checkudata(L, 1, DB_MT);
}

/* Pop the value on top and make it the uservalue of the userdata at idx
 * (relative to the stack before the pop). */
static void set_uservalue(lua_State *L, int idx) {
#if LUA_VERSION_NUM >= 504
  lua_setiuservalue(L, idx - 0, 1);
#elif LUA_VERSION_NUM >= 502
  lua_setuservalue(L, idx);
#else
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
  lua_setfenv(L, idx - 0);
#endif
}

static int push_value(lua_State *L, sqlite3_stmt *st, int i) {
  switch (sqlite3_column_type(st, i)) {
  case SQLITE_INTEGER: lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i)); break;
  case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, i)); break;
  case SQLITE_TEXT:
    lua_pushlstring(L, (const char *)sqlite3_column_text(st, i),
                    (size_t)sqlite3_column_bytes(st, i));
    break;
  case SQLITE_BLOB: {
    const void *p = sqlite3_column_blob(st, i);
    lua_pushlstring(L, p ? p : "", (size_t)sqlite3_column_bytes(st, i));
    break;
  }
  default: lua_pushnil(L);
  }
  return 1;
}

/* Bind Lua values first..last to st's parameters 1..n. Wrong types raise
 * (a programmer's mistake); SQLite failures return the rc. */
static int bind_args(lua_State *L, sqlite3_stmt *st, int first, int last) {
  int n = last - first + 1, i, rc = SQLITE_OK;
  if (n > sqlite3_bind_parameter_count(st))
    return luaL_error(L, "bad argument #%d (statement takes %d values, got %d)", first,
                      sqlite3_bind_parameter_count(st), n);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  for (i = 0; i < n && rc == SQLITE_OK; i++) {
    int idx = first + i;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: rc = sqlite3_bind_null(st, i + 1); break;
    case LUA_TBOOLEAN: rc = sqlite3_bind_int(st, i + 1, lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        rc = sqlite3_bind_int64(st, i + 1, (sqlite3_int64)lua_tointeger(L, idx));
      else rc = sqlite3_bind_double(st, i + 1, lua_tonumber(L, idx));
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      rc = sqlite3_bind_text64(st, i + 1, s, len, SQLITE_TRANSIENT, SQLITE_UTF8);
      break;
    }
    default:
      return luaL_argerror(L, idx, lua_pushfstring(L, "cannot bind a %s", luaL_typename(L, idx)));
    }
  }
  return rc;
}

/* Prepare one statement; the tail must be empty (or whitespace/comments). */
static int prepare_one(lua_State *L, sqlite3 *db, const char *sql, size_t len, sqlite3_stmt **out) {
  const char *tail = NULL;
  int rc = sqlite3_prepare_v2(db, sql, (int)len, out, &tail);
  if (rc != SQLITE_OK) return rc;
  if (*out == NULL) {
    luaL_error(L, "bad argument #2 (no SQL statement)");
  }
  return SQLITE_OK;
}

/* ------------------------------------------------------------------ Db */

static int db_gc(lua_State *L) {
  db_t *d = check_db(L);
  if (d->db) {
    sqlite3_close_v2(d->db);
    d->db = NULL;
  }
  return 0;
}

static int db_close(lua_State *L) {
  db_gc(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int db_tostring(lua_State *L) {
  db_t *d = check_db(L);
  if (d->db) lua_pushfstring(L, "sqlite db (%s)", sqlite3_db_filename(d->db, "main"));
  else lua_pushliteral(L, "sqlite db (closed)");
  return 1;
}

static int db_exec(lua_State *L) {
  db_t *d = check_db(L);
  const char *sql = luaL_checkstring(L, 2);
  char *msg = NULL;
  if (!d->db) return fail_closed(L);
  if (sqlite3_exec(d->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    luaL_pushfail(L);
    lua_pushfstring(L, "sqlite: %s", msg ? msg : sqlite3_errmsg(d->db));
    sqlite3_free(msg);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Check the bind arguments before any statement exists, so nothing leaks
 * when one of them is of a wrong type. */
static void check_bindable(lua_State *L, int first) {
  int i;
  for (i = first; i <= lua_gettop(L); i++) {
    int t = lua_type(L, i);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
      luaL_argerror(L, i, lua_pushfstring(L, "cannot bind a %s", luaL_typename(L, i)));
  }
}

static stmt_t *new_stmt(lua_State *L, int dbidx) {
  stmt_t *s = lua_newuserdatauv(L, sizeof *s, 1);
  s->st = NULL;
  s->owner = NULL;
  s->done = 0;
  luaL_getmetatable(L, STMT_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, dbidx);
  set_uservalue(L, -2);
  return s;
}

static int db_run(lua_State *L) {
  db_t *d = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int top = lua_gettop(L), rc = SQLITE_OK;
  stmt_t *s;
  if (!d->db) return fail_closed(L);
  check_bindable(L, 3);
  s = new_stmt(L, 1); /* owns the statement: a raise below still finalizes it */
  if (prepare_one(L, d->db, sql, len, &s->st) != SQLITE_OK) return fail_db(L, d->db, NULL);
  s->owner = d;
  if (top > 2) rc = bind_args(L, s->st, 3, top);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(s->st)) == SQLITE_ROW) {
    }
  }
  if (rc != SQLITE_DONE) {
    int r = fail_db(L, d->db, NULL);
    sqlite3_finalize(s->st);
    s->st = NULL;
    return r;
  }
  sqlite3_finalize(s->st);
  s->st = NULL;
  lua_pushinteger(L, sqlite3_changes(d->db));
  return 1;
}

static int db_prepare(lua_State *L) {
  db_t *d = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  stmt_t *s;
  if (!d->db) return fail_closed(L);
  s = new_stmt(L, 1); /* closed until prepared */
  if (prepare_one(L, d->db, sql, len, &s->st) != SQLITE_OK) return fail_db(L, d->db, NULL);
  s->owner = d;
  return 1;
}

static int db_query(lua_State *L) {
  db_t *d = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int top = lua_gettop(L), rc, ncol, i, n = 0;
  stmt_t *s;
  if (!d->db) return fail_closed(L);
  check_bindable(L, 3);
  /* A statement userdata owns the sqlite3_stmt, so an error while building
   * the result (out of memory) still finalizes it through __gc. */
  s = new_stmt(L, 1);
  if (prepare_one(L, d->db, sql, len, &s->st) != SQLITE_OK) return fail_db(L, d->db, NULL);
  s->owner = d;
  if (top > 2 && (rc = bind_args(L, s->st, 3, top)) != SQLITE_OK) return fail_db(L, d->db, NULL);
  lua_newtable(L);
  ncol = sqlite3_column_count(s->st);
  while ((rc = sqlite3_step(s->st)) == SQLITE_ROW) {
    lua_createtable(L, 0, ncol);
    for (i = 0; i < ncol; i++) {
      push_value(L, s->st, i);
      lua_setfield(L, -2, sqlite3_column_name(s->st, i));
    }
    lua_rawseti(L, -2, ++n);
  }
  if (rc != SQLITE_DONE) {
    int r = fail_db(L, d->db, NULL);
    sqlite3_finalize(s->st);
    s->st = NULL;
    return r;
  }
  sqlite3_finalize(s->st);
  s->st = NULL;
  return 1;
}

static int rows_iter(lua_State *L) {
  stmt_t *s = luaL_checkudata(L, 1, STMT_MT);
  int rc, i, ncol;
  if (!s->st) return 0;
  rc = sqlite3_step(s->st);
  if (rc == SQLITE_ROW) {
    ncol = sqlite3_column_count(s->st);
    luaL_checkstack(L, ncol, "too many columns");
    for (i = 0; i < ncol; i++) push_value(L, s->st, i);
    return ncol;
  }
  if (rc != SQLITE_DONE) {
    const char *m = sqlite3_errmsg(sqlite3_db_handle(s->st));
    lua_pushfstring(L, "sqlite: %s", m);
    sqlite3_finalize(s->st);
    s->st = NULL;
    return lua_error(L);
  }
  sqlite3_finalize(s->st);
  s->st = NULL;
  return 0;
}

/* for ... in db:rows(sql, ...): iterator, state (the statement), nil, and the
 * statement again as the to-be-closed value, so a `break` finalizes it. */
static int db_rows(lua_State *L) {
  db_t *d = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int top = lua_gettop(L);
  stmt_t *s;
  if (!d->db) return luaL_error(L, "sqlite: rows on a closed database");
  check_bindable(L, 3);
  s = new_stmt(L, 1);
  if (prepare_one(L, d->db, sql, len, &s->st) != SQLITE_OK)
    return luaL_error(L, "sqlite: %s", sqlite3_errmsg(d->db));
  s->owner = d;
  if (top > 2 && bind_args(L, s->st, 3, top) != SQLITE_OK)
    return luaL_error(L, "sqlite: %s", sqlite3_errmsg(d->db));
  lua_pushcfunction(L, rows_iter);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_pushvalue(L, -2);
  return 4;
}

static int db_changes(lua_State *L) {
  db_t *d = check_db(L);
  if (!d->db) return fail_closed(L);
  lua_pushinteger(L, sqlite3_changes(d->db));
  return 1;
}

static int db_last_insert_rowid(lua_State *L) {
  db_t *d = check_db(L);
  if (!d->db) return fail_closed(L);
  lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(d->db));
  return 1;
}

static int db_in_transaction(lua_State *L) {
  db_t *d = check_db(L);
  if (!d->db) return fail_closed(L);
  lua_pushboolean(L, sqlite3_get_autocommit(d->db) == 0);
  return 1;
}

static int db_is_open(lua_State *L) {
  lua_pushboolean(L, check_db(L)->db != NULL);
  return 1;
}

/* ---------------------------------------------------------------- Stmt */

static stmt_t *check_stmt(lua_State *L) {
  return luaL_checkudata(L, 1, STMT_MT);
}

static int stmt_gc(lua_State *L) {
  stmt_t *s = check_stmt(L);
  if (s->st) {
    sqlite3_finalize(s->st);
    s->st = NULL;
  }
  return 0;
}

static int stmt_close(lua_State *L) {
  stmt_gc(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int stmt_tostring(lua_State *L) {
  stmt_t *s = check_stmt(L);
  if (s->st) lua_pushfstring(L, "sqlite statement (%s)", sqlite3_sql(s->st));
  else lua_pushliteral(L, "sqlite statement (closed)");
  return 1;
}

/* A statement is usable while it is prepared and its database is open. */
static int stmt_live(stmt_t *s) {
  return s->st != NULL && s->owner != NULL && s->owner->db != NULL;
}

static int stmt_bind(lua_State *L) {
  stmt_t *s = check_stmt(L);
  if (!stmt_live(s)) return fail_closed(L);
  check_bindable(L, 2);
  if (bind_args(L, s->st, 2, lua_gettop(L)) != SQLITE_OK) return fail_db(L, s->owner->db, NULL);
  s->done = 0;
  lua_settop(L, 1);
  return 1;
}

static int stmt_step(lua_State *L) {
  stmt_t *s = check_stmt(L);
  int rc;
  if (!stmt_live(s)) return fail_closed(L);
  rc = sqlite3_step(s->st);
  if (rc == SQLITE_ROW) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == SQLITE_DONE) {
    s->done = 1;
    lua_pushboolean(L, 0);
    return 1;
  }
  rc = fail_db(L, s->owner->db, NULL);
  sqlite3_reset(s->st);
  return rc;
}

static int stmt_values(lua_State *L) {
  stmt_t *s = check_stmt(L);
  int i, n;
  if (!stmt_live(s)) return fail_closed(L);
  n = sqlite3_data_count(s->st);
  luaL_checkstack(L, n, "too many columns");
  for (i = 0; i < n; i++) push_value(L, s->st, i);
  return n;
}

static int stmt_reset(lua_State *L) {
  stmt_t *s = check_stmt(L);
  if (!stmt_live(s)) return fail_closed(L);
  sqlite3_reset(s->st);
  s->done = 0;
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- open */

static int l_sqlite_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int busy = 5000, readonly = 0, rc;
  db_t *d;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    busy = (int)ae_optnumfield(L, 2, "busy_timeout", 5000);
    readonly = ae_optboolfield(L, 2, "readonly", 0);
  }
  d = lua_newuserdatauv(L, sizeof *d, 0);
  d->db = NULL;
  luaL_getmetatable(L, DB_MT);
  lua_setmetatable(L, -2);
  rc = sqlite3_open_v2(
      path, &d->db, readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE),
      NULL);
  if (rc != SQLITE_OK) {
    const char *m = d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc);
    luaL_pushfail(L);
    lua_pushfstring(L, "sqlite: cannot open %s: %s", path, m);
    sqlite3_close_v2(d->db);
    d->db = NULL;
    return 2;
  }
  sqlite3_extended_result_codes(d->db, 1);
  sqlite3_busy_timeout(d->db, busy);
  return 1;
}

static int l_sqlite_version(lua_State *L) {
  lua_pushstring(L, sqlite3_libversion());
  return 1;
}

void ae_open_sqlite(lua_State *L) {
  static const luaL_Reg db_methods[] = {{"exec", db_exec},
                                        {"run", db_run},
                                        {"query", db_query},
                                        {"rows", db_rows},
                                        {"prepare", db_prepare},
                                        {"changes", db_changes},
                                        {"last_insert_rowid", db_last_insert_rowid},
                                        {"in_transaction", db_in_transaction},
                                        {"is_open", db_is_open},
                                        {"close", db_close},
                                        {NULL, NULL}};
  static const luaL_Reg stmt_methods[] = {{"bind", stmt_bind},     {"step", stmt_step},
                                          {"values", stmt_values}, {"reset", stmt_reset},
                                          {"close", stmt_close},   {NULL, NULL}};
  ae_newclass(L, DB_MT, db_methods, db_gc, db_tostring);
  ae_newclass(L, STMT_MT, stmt_methods, stmt_gc, stmt_tostring);
  lua_pushcfunction(L, l_sqlite_open);
  lua_setfield(L, -2, "sqlite_open");
  lua_pushcfunction(L, l_sqlite_version);
  lua_setfield(L, -2, "sqlite_version");
}

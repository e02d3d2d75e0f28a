/* Small file-system helpers the Lua side cannot do portably: a file's
 * permission bits (profile files must not be readable by others), mkdir -p,
 * and whether a descriptor is a terminal (the runner's live view). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

static int fail_errno(lua_State *L, const char *what, const char *path) {
  luaL_pushfail(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
  return 2;
}

/* file_mode(path) -> mode bits (integer), or nil, err */
static int l_file_mode(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return fail_errno(L, "stat", path);
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  return 1;
}

/* mkdir_p(path, mode?) -> true, or nil, err */
static int l_mkdir_p(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
  char buf[PATH_MAX];
  if (len == 0 || len >= sizeof buf) {
    luaL_pushfail(L);
    lua_pushfstring(L, "mkdir %s: path too long or empty", path);
    return 2;
  }
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, mode) != 0 && errno != EEXIST) return fail_errno(L, "mkdir", buf);
    *p = '/';
  }
  if (mkdir(buf, mode) != 0 && errno != EEXIST) return fail_errno(L, "mkdir", buf);
  lua_pushboolean(L, 1);
  return 1;
}

/* realpath(path) -> absolute path without symlinks, or nil, err */
static int l_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (realpath(path, buf) == NULL) return fail_errno(L, "realpath", path);
  lua_pushstring(L, buf);
  return 1;
}

/* isatty(fd) -> boolean */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg fs_funcs[] = {
    {"file_mode", l_file_mode}, {"mkdir_p", l_mkdir_p}, {"isatty", l_isatty},
    {"realpath", l_realpath},   {NULL, NULL},
};

void ae_open_fs(lua_State *L) {
  luaL_setfuncs(L, fs_funcs, 0);
}

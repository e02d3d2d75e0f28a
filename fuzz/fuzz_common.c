/* See fuzz_common.h. */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#ifndef AE_SRCDIR
#define AE_SRCDIR "."
#endif

static int traceback(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

lua_State *fuzz_lua_state(void) {
  lua_State *L = luaL_newstate();
  if (!L) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "analytics_engine.core", luaopen_analytics_engine_core, 0);
  lua_pop(L, 1);
  fuzz_lua_do(L, "package.path = '" AE_SRCDIR "/lua/?.lua;" AE_SRCDIR
                 "/lua/?/init.lua;' .. package.path");
  return L;
}

void fuzz_lua_do(lua_State *L, const char *chunk) {
  lua_pushcfunction(L, traceback);
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 0, -2) != LUA_OK) {
    fprintf(stderr, "fuzz harness: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
}

void fuzz_lua_call(lua_State *L, const char *fn, const char *arg, size_t len) {
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, fn);
  lua_pushlstring(L, arg, len);
  if (lua_pcall(L, 1, 0, -3) != LUA_OK) {
    fprintf(stderr, "fuzz: %s raised: %s\n", fn, lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
}

/* ---- the listener ---------------------------------------------------------- */

static int listen_fd, conn_timeout;
static fuzz_conn_fn conn_fn;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned char *answer;
static size_t answer_len;
static unsigned long served, want;

static void *serve(void *arg) {
  for (;;) {
    size_t len;
    unsigned char *copy;
    struct timeval tv = {conn_timeout, 0};
    int fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&mu);
    len = answer_len;
    copy = malloc(len ? len : 1);
    if (copy && len) memcpy(copy, answer, len);
    pthread_mutex_unlock(&mu);
    if (copy) conn_fn(fd, copy, len);
    free(copy);
    close(fd);
    pthread_mutex_lock(&mu);
    served++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  return arg;
}

lua_State *fuzz_listener_start(const char *setup, fuzz_conn_fn fn, int timeout_s, int *port) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  pthread_t th;
  int one = 1;
  lua_State *L = fuzz_lua_state();
  fuzz_lua_do(L, setup);
  conn_fn = fn;
  conn_timeout = timeout_s;
  listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) abort();
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(listen_fd, 64) != 0 ||
      getsockname(listen_fd, (struct sockaddr *)&sa, &sl) != 0)
    abort();
  if (pthread_create(&th, NULL, serve, NULL) != 0) abort();
  pthread_detach(th);
  *port = ntohs(sa.sin_port);
  return L;
}

void fuzz_listener_run(lua_State *L, const char *fn, const char *arg, size_t len,
                       const unsigned char *data, size_t size) {
  struct timespec until;
  pthread_mutex_lock(&mu);
  free(answer);
  answer = malloc(size ? size : 1);
  if (!answer) abort();
  if (size) memcpy(answer, data, size);
  answer_len = size;
  want = served + 1;
  pthread_mutex_unlock(&mu);
  fuzz_lua_call(L, fn, arg, len);
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 3;
  pthread_mutex_lock(&mu);
  while (served < want)
    if (pthread_cond_timedwait(&cv, &mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&mu);
}

int fuzz_read_head(int fd, char *req, size_t cap) {
  size_t got = 0;
  while (got < cap - 1) {
    ssize_t n = recv(fd, req + got, cap - 1 - got, 0);
    if (n <= 0) return -1;
    got += (size_t)n;
    req[got] = '\0';
    if (strstr(req, "\r\n\r\n")) return 0;
  }
  return -1;
}

int fuzz_send_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n <= 0) return -1;
    p += n, len -= (size_t)n;
  }
  return 0;
}

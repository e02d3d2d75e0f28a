/* libFuzzer target: csrc/server.c (the engine's libmicrohttpd glue).
 *
 * One core.http_server on 127.0.0.1 lives for the whole run. Each input is
 * written as raw bytes to a fresh TCP connection, the write side is closed,
 * and the server is polled from Lua (answering, or dropping, every request it
 * hands over) until it closes the connection. This drives request-line and
 * header parsing, body collection and the max_body limit, pipelining, and the
 * suspend/resume path of respond() and drop() on connections in any state. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"

static lua_State *L;
static int port;

static const char *SETUP =
    "core = require 'analytics_engine.core'\n"
    "srv = assert(core.http_server{ host = '127.0.0.1', port = 0, max_body = 4096,\n"
    "                               connection_timeout = 5 })\n"
    "n = 0\n"
    "function step(t)\n"
    "  for _, r in ipairs(srv:poll(tonumber(t))) do\n"
    "    n = n + 1\n"
    "    assert(type(r.id) == 'number' and type(r.method) == 'string' and type(r.path) == "
    "'string')\n"
    "    assert(type(r.query) == 'string' and type(r.body) == 'string' and type(r.headers) == "
    "'table')\n"
    "    if r.too_large then assert(#r.body == 0) else assert(#r.body <= 4096) end\n"
    "    if n % 7 == 0 then\n"
    "      assert(srv:drop(r.id))\n"
    "    else\n"
    "      local h = { ['Content-Type'] = 'text/plain', ['X-Echo'] = r.headers['x-echo'] }\n"
    "      local ok = srv:respond(r.id, 100 + n % 500, h, r.path .. r.query .. r.body)\n"
    "      if not ok then assert(srv:drop(r.id)) end\n"
    "    end\n"
    "  end\n"
    "  assert(srv:pending() == 0)\n"
    "end\n";

static void step(double timeout) {
  char t[32];
  int n = snprintf(t, sizeof t, "%g", timeout);
  fuzz_lua_call(L, "step", t, (size_t)n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  L = fuzz_lua_state();
  fuzz_lua_do(L, SETUP);
  lua_getglobal(L, "srv");
  lua_getfield(L, -1, "port");
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  port = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct sockaddr_in sa;
  char buf[16384];
  size_t off = 0;
  int fd, rounds, idle = 0;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) abort();
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) abort();
  for (rounds = 0; off < size && rounds < 10000; rounds++) {
    ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n > 0) off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) break;
    step(0);
  }
  shutdown(fd, SHUT_WR);
  /* Until the server closes: every answer read, every handed request answered. */
  for (rounds = 0; rounds < 4000; rounds++) {
    ssize_t n;
    step(idle > 20 ? 0.001 : 0);
    n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
    idle = n > 0 ? 0 : idle + 1;
  }
  close(fd);
  step(0);
  return 0;
}

/* libFuzzer target: the HTTP client's response handling (csrc/http.c: header
 * collection and its size limit, push_headers, the body limit) and the Lua
 * parsers that read what it returns (errors.from_response, Retry-After).
 *
 * A thread listens on 127.0.0.1 and answers every connection with the fuzz
 * input as the raw response, then closes. The main thread makes a request
 * with Session:request on a fresh connection and checks the result's shape. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_common.h"

static lua_State *L;
static int listen_fd, port;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned char *answer;
static size_t answer_len;
static unsigned long served;

static const char *SETUP =
    "core = require 'analytics_engine.core'\n"
    "errors = require 'analytics_engine.errors'\n"
    "retry = require 'analytics_engine.retry'\n"
    "sess = assert(core.http_session())\n"
    "function fetch(port)\n"
    "  local url = 'http://127.0.0.1:' .. port .. '/v4/analytics_engines/x'\n"
    "  local res, err = sess:request{ url = url, timeout = 3, fresh_connect = true,\n"
    "                                 max_response_size = 65536, http_version = '1.1' }\n"
    "  if not res then\n"
    "    assert(type(err) == 'table' and type(err.kind) == 'string' and type(err.message) == "
    "'string')\n"
    "    return\n"
    "  end\n"
    "  assert(type(res.status) == 'number' and type(res.body) == 'string' and #res.body <= 65536)\n"
    "  for k, v in pairs(res.headers) do\n"
    "    assert(type(k) == 'string' and type(v) == 'string' and k == k:lower() and #k > 0)\n"
    "    assert(not v:find('\\n'))  -- a bare CR inside a value is passed through as sent\n"
    "  end\n"
    "  local ra = retry.parse_retry_after(res.headers['retry-after'], 0)\n"
    "  assert(ra == nil or (type(ra) == 'number' and ra >= 0))\n"
    "  if res.status < 200 or res.status > 299 then\n"
    "    local e = errors.from_response(res, { method = 'GET', path = '/x' })\n"
    "    local s = tostring(e)\n"
    "    assert(type(e.message) == 'string' and not s:find('[\\r\\n]'))\n"
    "  end\n"
    "end\n";

static void *serve(void *arg) {
  for (;;) {
    char req[8192];
    size_t got = 0, len, off = 0;
    unsigned char *copy;
    struct timeval tv = {2, 0};
    int fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (got < sizeof req - 1) { /* the request head: up to the blank line */
      ssize_t n = recv(fd, req + got, sizeof req - 1 - got, 0);
      if (n <= 0) break;
      got += (size_t)n;
      req[got] = '\0';
      if (strstr(req, "\r\n\r\n")) break;
    }
    pthread_mutex_lock(&mu);
    len = answer_len;
    copy = malloc(len ? len : 1);
    if (copy && len) memcpy(copy, answer, len);
    pthread_mutex_unlock(&mu);
    while (copy && off < len) {
      ssize_t n = send(fd, copy + off, len - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += (size_t)n;
    }
    free(copy);
    shutdown(fd, SHUT_WR);
    close(fd);
    pthread_mutex_lock(&mu);
    served++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  return arg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  pthread_t th;
  int one = 1;
  L = fuzz_lua_state();
  fuzz_lua_do(L, SETUP);
  listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) abort();
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(listen_fd, 64) != 0 ||
      getsockname(listen_fd, (struct sockaddr *)&sa, &sl) != 0)
    abort();
  port = ntohs(sa.sin_port);
  if (pthread_create(&th, NULL, serve, NULL) != 0) abort();
  pthread_detach(th);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char p[16];
  unsigned long want;
  struct timespec until;
  int n = snprintf(p, sizeof p, "%d", port);
  pthread_mutex_lock(&mu);
  free(answer);
  answer = malloc(size ? size : 1);
  if (!answer) abort();
  if (size) memcpy(answer, data, size);
  answer_len = size;
  want = served + 1;
  pthread_mutex_unlock(&mu);
  fuzz_lua_call(L, "fetch", p, (size_t)n);
  /* The next input must not be answered with this one's leftovers. */
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 3;
  pthread_mutex_lock(&mu);
  while (served < want)
    if (pthread_cond_timedwait(&cv, &mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&mu);
  return 0;
}

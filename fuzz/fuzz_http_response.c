/* libFuzzer target: the HTTP client's response handling (csrc/http.c: header
 * collection and its size limit, push_headers, the body limit) and the Lua
 * parsers that read what it returns (errors.from_response, Retry-After).
 *
 * A thread listens on 127.0.0.1 and answers every connection with the fuzz
 * input as the raw response, then closes. The main thread makes a request
 * with Session:request on a fresh connection and checks the result's shape. */
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "fuzz_common.h"

static lua_State *L;
static int port;

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

/* Read the request head (whatever it holds), answer with the input, close. */
static void answer_raw(int fd, const unsigned char *answer, size_t len) {
  char req[8192];
  fuzz_read_head(fd, req, sizeof req);
  fuzz_send_all(fd, answer, len);
  shutdown(fd, SHUT_WR);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  L = fuzz_listener_start(SETUP, answer_raw, 2, &port);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char p[16];
  int n = snprintf(p, sizeof p, "%d", port);
  fuzz_listener_run(L, "fetch", p, (size_t)n, data, size);
  return 0;
}

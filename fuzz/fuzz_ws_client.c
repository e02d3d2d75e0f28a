/* libFuzzer target: the WebSocket client's frame reader (csrc/ws_frame.c and ws_client.c on
 * wslay: frame parsing, fragmentation, control frames, the close handshake,
 * max_message_size, and the bytes that arrive together with the 101 head).
 *
 * A thread listens on 127.0.0.1. For each connection it reads the Upgrade
 * request, answers a valid 101 (Sec-WebSocket-Accept from the request's key,
 * computed with the core's ae_ws_accept_key), writes the fuzz input as raw
 * frames, closes its write side and reads until the client goes away. The
 * main thread connects with core.ws_connect (max_message_size 4096) and calls
 * receive() until it returns nil, checking only the documented shapes.
 * control_frames is on for inputs of odd length, so ping/pong delivery is
 * covered too without spending input bytes on an option. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "ws.h"

static lua_State *L;
static int port;

static const char *SETUP =
    "core = require 'analytics_engine.core'\n"
    "local KINDS = { timeout = true, closed = true, too_large = true, protocol = true,\n"
    "                handshake = true, connect = true, resolve = true, tls = true,\n"
    "                send = true, recv = true, other = true }\n"
    "local HARNESS = { handshake = true, connect = true, resolve = true, tls = true,\n"
    "                  timeout = true }\n"
    "local VERBOSE = os.getenv('FUZZ_WS_VERBOSE')  -- each outcome on stderr, for seeds\n"
    "local function say(...)\n"
    "  if VERBOSE then io.stderr:write(table.concat({...}, ' '), '\\n') end\n"
    "end\n"
    "local STATES = { connecting = true, open = true, ended = true, failed = true,\n"
    "                 closed = true }\n"
    "local function check_err(err, where)\n"
    "  assert(type(err) == 'table', where .. ': error is not a table')\n"
    "  assert(KINDS[err.kind], where .. ': undocumented kind ' .. tostring(err.kind))\n"
    "  assert(type(err.message) == 'string' and #err.message > 0, where .. ': no message')\n"
    "  -- err.reason is the peer's, raw; the message is one line\n"
    "  -- (fuzz/findings/ws_close_reason_newline was the input that showed otherwise).\n"
    "  assert(not err.message:find('[\\r\\n]'), where .. ': message is not one line')\n"
    "  assert(err.code == nil or math.type(err.code) == 'integer', where .. ': code')\n"
    "  assert(err.reason == nil or (type(err.reason) == 'string' and #err.reason <= 125),\n"
    "         where .. ': reason')\n"
    "end\n"
    "function run(arg)\n"
    "  local p, control = arg:match('^(%d+) (%d)$')\n"
    "  control = control == '1'\n"
    "  local ws = assert(core.ws_connect('ws://127.0.0.1:' .. p .. '/fuzz',\n"
    "    { max_message_size = 4096, connect_timeout = 3, control_frames = control }))\n"
    "  local ok, err = ws:connect(5)\n"
    "  if not ok then\n"
    "    -- frames that came with the 101 are read in the same step, so connect\n"
    "    -- can report their failure; a handshake failure is a harness bug\n"
    "    check_err(err, 'connect')\n"
    "    say('connect:', err.kind, err.message)\n"
    "    assert(not HARNESS[err.kind], 'connect failed against the valid 101: ' .. err.message)\n"
    "  end\n"
    "  local ops = control and { text = true, binary = true, ping = true, pong = true }\n"
    "                       or { text = true, binary = true }\n"
    "  for _ = 1, 100000 do\n"
    "    local data, op = ws:receive(5)\n"
    "    if data == nil then\n"
    "      check_err(op, 'receive')\n"
    "      say('end:', op.kind, op.message)\n"
    "      -- the listener has closed its side: waiting can only end in a failure or a close\n"
    "      assert(op.kind ~= 'timeout', 'receive timed out after the peer closed')\n"
    "      local again, err2 = ws:receive(0)\n"
    "      assert(again == nil and err2.kind == op.kind, 'a failure is not sticky')\n"
    "      break\n"
    "    end\n"
    "    assert(type(data) == 'string' and ops[op], 'receive: bad message shape')\n"
    "    say('message:', op, #data, string.format('%q', data:sub(1, 20)))\n"
    "    if op == 'text' or op == 'binary' then\n"
    "      assert(#data <= 4096, 'message over max_message_size')\n"
    "    else\n"
    "      assert(#data <= 125, 'control frame over 125 bytes')\n"
    "    end\n"
    "  end\n"
    "  assert(STATES[ws:state()], 'state')\n"
    "  local rc, reason, sent = ws:close_info()\n"
    "  assert(rc == nil or math.type(rc) == 'integer')\n"
    "  assert(type(reason) == 'string')\n"
    "  assert(sent == nil or math.type(sent) == 'integer')\n"
    "  assert(ws:close() == true)\n"
    "  assert(ws:state() == 'closed')\n"
    "  local d, e = ws:receive(0)\n"
    "  assert(d == nil and e.kind == 'closed')\n"
    "end\n"
    "-- A full collection after each input keeps mallocs and frees balanced per\n"
    "-- run, so libFuzzer's leak check (a full LSan scan each time they differ)\n"
    "-- runs rarely: about six times more inputs per second.\n"
    "function run_and_collect(arg)\n"
    "  run(arg)\n"
    "  collectgarbage()\n"
    "end\n";

/* The Sec-WebSocket-Key value of the head, or NULL; *len its length. */
static const char *find_key(const char *req, size_t *len) {
  const char *p = req;
  while ((p = strchr(p, '\n')) != NULL) {
    const char *v, *e;
    p++;
    if (strncasecmp(p, "Sec-WebSocket-Key:", 18) != 0) continue;
    v = p + 18;
    while (*v == ' ') v++;
    e = v;
    while (*e && *e != '\r' && *e != '\n') e++;
    *len = (size_t)(e - v);
    return v;
  }
  return NULL;
}

/* A valid 101 for the client's key, then the input as raw frames; then
 * drain until the client closes (pongs, its close frame), so it never sees a
 * reset caused by unread data. */
static void answer_frames(int fd, const unsigned char *copy, size_t len) {
  char req[8192], head[256], acc[29], sink[4096];
  const char *key;
  size_t klen = 0;
  if (fuzz_read_head(fd, req, sizeof req) == 0 && (key = find_key(req, &klen)) != NULL) {
    int n;
    ae_ws_accept_key(key, klen, acc);
    n = snprintf(head, sizeof head,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                 acc);
    /* The head and the frames go in one write half the time, so the frames
     * that arrive together with the 101 (in_off < in_len) are covered too. */
    if (len % 4 < 2) {
      unsigned char *both = malloc((size_t)n + len);
      if (both) {
        memcpy(both, head, (size_t)n);
        if (len) memcpy(both + n, copy, len);
        fuzz_send_all(fd, both, (size_t)n + len);
        free(both);
      }
    } else if (fuzz_send_all(fd, head, (size_t)n) == 0) {
      usleep(1000); /* let the client read the head alone */
      fuzz_send_all(fd, copy, len);
    }
  }
  shutdown(fd, SHUT_WR);
  while (recv(fd, sink, sizeof sink, 0) > 0) {
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  L = fuzz_listener_start(SETUP, answer_frames, 3, &port);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char p[32];
  int n = snprintf(p, sizeof p, "%d %d", port, (int)(size % 2));
  fuzz_listener_run(L, "run_and_collect", p, (size_t)n, data, size);
  return 0;
}

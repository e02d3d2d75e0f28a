/* libFuzzer target: the WebSocket client's frame reader (csrc/websocket.c on
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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "websocket.h"

static lua_State *L;
static int listen_fd, port;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned char *answer;
static size_t answer_len;
static unsigned long served;

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

/* Read the request head into req (NUL-terminated); 0 when complete. */
static int read_head(int fd, char *req, size_t cap) {
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

static int send_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n <= 0) return -1;
    p += n, len -= (size_t)n;
  }
  return 0;
}

static void *serve(void *arg) {
  for (;;) {
    char req[8192], head[256], acc[29], sink[4096];
    const char *key;
    size_t klen = 0, len;
    unsigned char *copy;
    struct timeval tv = {3, 0};
    int fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&mu);
    len = answer_len;
    copy = malloc(len ? len : 1);
    if (copy && len) memcpy(copy, answer, len);
    pthread_mutex_unlock(&mu);
    if (copy && read_head(fd, req, sizeof req) == 0 && (key = find_key(req, &klen)) != NULL) {
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
          send_all(fd, both, (size_t)n + len);
          free(both);
        }
      } else if (send_all(fd, head, (size_t)n) == 0) {
        usleep(1000); /* let the client read the head alone */
        send_all(fd, copy, len);
      }
    }
    free(copy);
    shutdown(fd, SHUT_WR);
    /* Drain until the client closes (pongs, its close frame), so it never
     * sees a reset caused by unread data. */
    while (recv(fd, sink, sizeof sink, 0) > 0) {
    }
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
  (void)argc, (void)argv;
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
  char p[32];
  unsigned long want;
  struct timespec until;
  int n = snprintf(p, sizeof p, "%d %d", port, (int)(size % 2));
  pthread_mutex_lock(&mu);
  free(answer);
  answer = malloc(size ? size : 1);
  if (!answer) abort();
  if (size) memcpy(answer, data, size);
  answer_len = size;
  want = served + 1;
  pthread_mutex_unlock(&mu);
  fuzz_lua_call(L, "run_and_collect", p, (size_t)n);
  /* The next connection must not meet this one's listener still draining. */
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 3;
  pthread_mutex_lock(&mu);
  while (served < want)
    if (pthread_cond_timedwait(&cv, &mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&mu);
  return 0;
}

/* The HTTP client's insides, shared by http.c (sessions, the easy-handle
 * pool, driving the multi handle, the methods), http_request.c (reading a
 * request table, setting a handle's options) and http_response.c (libcurl's
 * write callbacks, results as Lua values). */
#ifndef AE_HTTP_H
#define AE_HTTP_H
#include <curl/curl.h>

#include "buf.h"
#include "core.h"

#define SESSION_MT "analytics_engine.HttpSession"
#define RESPONSE_MT "analytics_engine.HttpResponse"
#define HEADERS_MT "analytics_engine.HttpHeaders"

/* A core.http_headers value: NUL-terminated header lines, back to back. */
typedef struct {
  size_t len;
  char block[1];
} hset;

#define DEFAULT_MAX_IDLE 16
#define LIMIT_MAX_IDLE 1024
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_MAX_RESPONSE (64.0 * 1024 * 1024)
/* All header lines of one response. Below libcurl's own total (300 KB since
 * 7.84), so this check fires first and the error can name the limit. */
#define MAX_HEADER_BYTES (256 * 1024)

/* Transfer options that are usually the same for every request of a session:
 * a session holds them as defaults, and an easy handle remembers the ones it
 * was set up with, so the next request with the same ones skips
 * curl_easy_reset and the ~20 curl_easy_setopt calls that set them again. */
typedef struct {
  const char *cafile, *capath, *proxy, *user_agent; /* owned by whoever holds the xopts */
  long connect_ms, timeout_ms, low_speed_time, low_speed_limit, http_version;
  int explicit_version, insecure, gzip;
  curl_off_t max_size;
} xopts;

/* An easy handle and what it was last set up with. Between transfers it keeps
 * its options (a reused handle is how libcurl is meant to be used); only the
 * per-request ones (URL, method, body, the pointers to the transfer) are set
 * again. Its header list lives here, not in the transfer, so an unchanged set
 * of header lines is neither rebuilt nor set again. */
typedef struct {
  CURL *e;
  int tuned; /* 1: x, method and has_body describe the handle's options */
  xopts x;   /* string fields: copies owned here (when tuned) */
  char method[16];
  int has_body;               /* how the body was given (http_request.c's BODY_*) */
  struct curl_slist *headers; /* set as CURLOPT_HTTPHEADER (when tuned) */
  char *hblock;               /* the NUL-separated lines `headers` was built from */
  size_t hlen;
} ehandle;

typedef struct xfer {
  struct xfer *next;
  lua_Integer id;
  ehandle *easy;       /* NULL once finished */
  ae_buf body;         /* response body */
  ae_buf head;         /* header lines of the last response */
  curl_off_t max_size; /* 0 = unlimited */
  int too_large;       /* 1: body past max_size, 2: headers past MAX_HEADER_BYTES */
  int oom, done;
  int switched; /* the server answered 101 to a request that asked for no upgrade */
  CURLcode result;
  long status, version;
  double total_time;
  char *url;    /* effective URL, copied at completion */
  int url_idx;  /* request() only: stack index of the request's url string */
  char *upload; /* send_once: the body, read by libcurl (never rewound) */
  size_t upload_len, upload_off;
  char errbuf[CURL_ERROR_SIZE];
} xfer;

typedef struct {
  CURLM *multi;           /* NULL when closed */
  xfer *active;           /* in flight */
  xfer *done, *done_last; /* finished, not yet returned (FIFO) */
  ehandle **idle;         /* easy handles kept for reuse, options intact */
  int nidle, max_idle;
  lua_Integer next_id;
  xopts defaults; /* http_session{ defaults = ... }; strings owned here */
} session;

/* Everything read from a request table, before any C resource exists. The
 * strings point into the request table (argument 2), the session's defaults
 * or the stack, which hold them until the transfer has been started. */
typedef struct {
  const char *method, *url, *body;
  size_t body_len;
  int fresh, once;
  xopts x;
  const char *hblock; /* header lines, each ending in NUL; hlen 0: none */
  size_t hlen;
  int url_idx; /* stack index of the url string */
} reqopts;

#define HEADER_BUF 1024 /* header lines of a request, formatted (more: on the stack) */

/* http_request.c: reading may raise; setting options never does */
void http_xopts_init(xopts *x);
void http_xopts_free(xopts *x);
int http_xopts_copy(xopts *dst, const xopts *src);
void http_ehandle_untune(ehandle *h);
void http_read_defaults(lua_State *L, int idx, xopts *d);
void http_read_request(lua_State *L, session *s, int idx, reqopts *o, char *hbuf);
int http_l_headers(lua_State *L);
CURLcode http_xfer_setopts(xfer *x, const reqopts *o);

/* http_response.c */
size_t http_on_body(char *p, size_t size, size_t nmemb, void *ud);
size_t http_on_header(char *p, size_t size, size_t nmemb, void *ud);
void http_push_error(lua_State *L, const char *kind, const char *message, lua_Integer code);
int http_push_outcome(lua_State *L, xfer *x);
int http_push_closed(lua_State *L);
int http_push_multi_error(lua_State *L, CURLMcode mc);
int http_res_index(lua_State *L);
#endif

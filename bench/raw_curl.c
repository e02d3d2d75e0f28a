/* The floor for benchmark 1: N keep-alive GETs with one raw libcurl easy
 * handle, set up once, making the same request the Lua client makes with
 * the same transfer options (see bench/README.md, "what the floor does"):
 * headers Accept, User-Agent, Authorization and Accept-Encoding (gzip and
 * deflate offered, as the client does by default); connect and total
 * timeouts, TCP keep-alive probes, no redirects, http/https only, a response
 * size cap; response header lines and the body collected into buffers, the
 * status and body checked.
 *
 *   raw_curl URL AUTH_HEADER_VALUE N  -> prints "seconds calls" for calls 2..N */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

typedef struct {
  char buf[4096];
  size_t n;
} buffer;

/* Both callbacks append to a fixed buffer; an answer that does not fit fails the run. */
static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
  buffer *b = (buffer *)ud;
  size_t len = size * nmemb;
  if (len > sizeof b->buf - b->n) return 0;
  memcpy(b->buf + b->n, p, len);
  b->n += len;
  return len;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  CURL *e;
  struct curl_slist *h = NULL;
  char authz[1024], errbuf[CURL_ERROR_SIZE];
  buffer body, head;
  long n, i, status = 0;
  double t0 = 0, t1;
  if (argc != 4 || (n = strtol(argv[3], NULL, 10)) <= 0) {
    fprintf(stderr, "usage: raw_curl URL AUTHORIZATION N\n");
    return 2;
  }
  snprintf(authz, sizeof authz, "Authorization: %s", argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  e = curl_easy_init();
  h = curl_slist_append(h, "Accept: application/json");
  h = curl_slist_append(h, authz);
  if (e == NULL || h == NULL) return 1;
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "analytics-engine-lua/0.1.0");
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 120000L);
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)64 * 1024 * 1024);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)&body);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)&head);
  /* call 0 opens the connection (untimed), as the other clients' warm-up does */
  for (i = 0; i < n; i++) {
    CURLcode rc;
    if (i == 1) t0 = now();
    body.n = head.n = 0;
    rc = curl_easy_perform(e);
    if (rc != CURLE_OK) {
      fprintf(stderr, "raw_curl: call %ld: %s: %s\n", i + 1, curl_easy_strerror(rc), errbuf);
      return 1;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || body.n == 0 || memchr(body.buf, '3', body.n) == NULL || head.n == 0) {
      fprintf(stderr, "raw_curl: call %ld: status %ld\n", i + 1, status);
      return 1;
    }
  }
  t1 = now();
  printf("%.6f %ld\n", n > 1 ? t1 - t0 : 0.0, n - 1);
  curl_slist_free_all(h);
  curl_easy_cleanup(e);
  curl_global_cleanup();
  return 0;
}

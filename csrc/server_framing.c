/* Message framing checks libmicrohttpd 0.9.75 does not make: it accepts
 * Content-Length with Transfer-Encoding, differing Content-Lengths, codings
 * other than chunked and white space before a header's colon, which lets a
 * request be smuggled behind a proxy, and a missing or doubled Host. Such a
 * request is refused with 400 and its connection closed. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "server.h"

typedef struct {
  int ncl, nte, nhost, bad_name;
  const char *cl, *te;
  int cl_differ;
} framing;

static AE_MHD_RESULT count_framing(void *cls, enum MHD_ValueKind kind, const char *k, size_t kl,
                                   const char *v, size_t vl) {
  framing *f = cls;
  if (kl == 0 || memchr(k, ' ', kl) || memchr(k, '\t', kl)) f->bad_name = 1;
  if (strcasecmp(k, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
    if (f->ncl++ && v && f->cl && strcmp(v, f->cl) != 0) f->cl_differ = 1;
    f->cl = v;
  } else if (strcasecmp(k, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
    f->nte++;
    f->te = v;
  } else if (strcasecmp(k, MHD_HTTP_HEADER_HOST) == 0) {
    f->nhost++;
  }
  return MHD_YES;
}

/* What is wrong with the request's framing (RFC 9112 sections 5.1, 6.1,
 * 6.3; and 3.2: an HTTP/1.1 request has exactly one Host, any request at
 * most one), or NULL. */
const char *srv_bad_framing(struct MHD_Connection *c, const char *version) {
  framing f;
  memset(&f, 0, sizeof f);
  MHD_get_connection_values_n(c, MHD_HEADER_KIND, count_framing, &f);
  if (f.bad_name) return "a header name is empty or has white space before the colon";
  if (f.nte && f.ncl) return "Content-Length and Transfer-Encoding together";
  if (f.cl_differ) return "Content-Length headers that differ";
  if (f.nhost > 1) return "more than one Host header";
  if (f.nhost == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
    return "an HTTP/1.1 request without a Host header";
  if (f.nte) {
    if (strcmp(version, MHD_HTTP_VERSION_1_1) != 0)
      return "Transfer-Encoding in an HTTP/1.0 request";
    if (f.nte > 1 || !f.te || strcasecmp(f.te, "chunked") != 0)
      return "a Transfer-Encoding other than chunked";
  }
  return NULL;
}

/* Refuse the request with 400 and close the connection: after bad framing
 * nothing that follows on it can be trusted to be a request. */
AE_MHD_RESULT srv_refuse_framing(struct MHD_Connection *c, const char *why) {
  char body[256];
  struct MHD_Response *resp;
  AE_MHD_RESULT ret;
  int n = snprintf(body, sizeof body,
                   "{\"errors\":[{\"code\":\"bad_framing\",\"message\":\"ambiguous request "
                   "framing: %s\"}],\"status_code\":400}",
                   why);
  resp = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
  if (!resp) return MHD_NO;
  if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES ||
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES) {
    MHD_destroy_response(resp);
    return MHD_NO;
  }
  ret = MHD_queue_response(c, MHD_HTTP_BAD_REQUEST, resp);
  MHD_destroy_response(resp);
  return ret;
}

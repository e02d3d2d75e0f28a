/* See buf.h. Grows by doubling from 1 KiB, so n appends cost O(n) copies. */
#include "buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 1024

void ae_buf_init(ae_buf *b, size_t limit) {
  b->p = NULL;
  b->len = b->cap = 0;
  b->limit = limit;
}

int ae_buf_reserve(ae_buf *b, size_t n) {
  size_t need, cap;
  char *np;
  if (n > b->limit - b->len || n > SIZE_MAX - 1 - b->len) return AE_BUF_TOOBIG;
  need = b->len + n + 1; /* and the NUL */
  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : MIN_CAP;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) return AE_BUF_NOMEM;
    cap *= 2;
  }
  np = realloc(b->p, cap);
  if (!np) return AE_BUF_NOMEM;
  b->p = np;
  b->cap = cap;
  b->p[b->len] = '\0';
  return 0;
}

int ae_buf_add(ae_buf *b, const void *p, size_t n) {
  int r;
  if (n == 0) return 0; /* an empty body allocates nothing */
  r = ae_buf_reserve(b, n);
  if (r != 0) return r;
  memcpy(b->p + b->len, p, n);
  ae_buf_added(b, n);
  return 0;
}

size_t ae_buf_room(const ae_buf *b) {
  return b->cap ? b->cap - b->len - 1 : 0;
}

void ae_buf_added(ae_buf *b, size_t n) {
  if (!b->p) return;
  b->len += n;
  b->p[b->len] = '\0';
}

void ae_buf_reset(ae_buf *b) {
  b->len = 0;
  if (b->p) b->p[0] = '\0';
}

void ae_buf_free(ae_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

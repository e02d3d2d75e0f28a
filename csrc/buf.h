/* One growable byte buffer for the whole core, with a size limit (after
 * curl's dynbuf and its `toobig`, and lua-cjson's strbuf): response bodies
 * and headers (http.c), request bodies (server.c), the WebSocket handshake
 * (ws_client.c, ws_server.c). The data is always followed by a NUL byte, so
 * a text in it can be searched with the str* functions. */
#ifndef AE_BUF_H
#define AE_BUF_H
#include <stddef.h>

#define AE_BUF_NOMEM (-1)  /* out of memory: nothing changed */
#define AE_BUF_TOOBIG (-2) /* the limit would be passed: nothing changed */
#define AE_BUF_NOLIMIT ((size_t)-1)

typedef struct {
  char *p;      /* NULL until the first byte is added or reserved */
  size_t len;   /* bytes of data */
  size_t cap;   /* bytes allocated (data, NUL and spare room) */
  size_t limit; /* most bytes of data it may hold (0: none; set by ae_buf_init) */
} ae_buf;

/* An empty buffer (no allocation) that holds at most `limit` bytes
 * (AE_BUF_NOLIMIT: as many as memory allows). A zeroed one holds nothing. */
void ae_buf_init(ae_buf *b, size_t limit);
/* Append n bytes: 0, AE_BUF_TOOBIG or AE_BUF_NOMEM. */
int ae_buf_add(ae_buf *b, const void *p, size_t n);
/* Room for n more bytes (read into ae_buf_end, then ae_buf_added). */
int ae_buf_reserve(ae_buf *b, size_t n);
/* Bytes that fit after the data without growing. */
size_t ae_buf_room(const ae_buf *b);
/* n bytes were written at the end (within the room). */
void ae_buf_added(ae_buf *b, size_t n);
/* Empty; the memory is kept for reuse. */
void ae_buf_reset(ae_buf *b);
/* Release the memory; the buffer is empty and usable again (same limit). */
void ae_buf_free(ae_buf *b);

static inline char *ae_buf_end(ae_buf *b) {
  return b->p + b->len;
}
#endif

/* analytics_engine.core digests: SHA-1 (the WebSocket handshake), SHA-256 and
 * HMAC-SHA-256 (core.sha256, core.hmac_sha256), base64, and random bytes from
 * getrandom (core.random_bytes, WebSocket keys and masks). Small and
 * self-contained, so the core needs no crypto library. */
#include "core.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

/* SHA-1 and SHA-256 share everything but the block function and the
 * initial state: 64-byte blocks, padding with 0x80, zeros and the bit length
 * big-endian, the digest as big-endian words. */
typedef struct md_ctx {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t n;
  void (*block)(struct md_ctx *c, const unsigned char *p);
} md_ctx;

static void md_init(md_ctx *c, const uint32_t *iv, size_t nwords,
                    void (*block)(md_ctx *, const unsigned char *)) {
  memcpy(c->h, iv, nwords * sizeof *iv);
  c->len = 0;
  c->n = 0;
  c->block = block;
}

static void md_update(md_ctx *c, const void *data, size_t len) {
  const unsigned char *p = data;
  c->len += len;
  if (c->n) {
    size_t k = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, k);
    c->n += k, p += k, len -= k;
    if (c->n < 64) return;
    c->block(c, c->buf);
    c->n = 0;
  }
  for (; len >= 64; p += 64, len -= 64) c->block(c, p);
  memcpy(c->buf, p, len);
  c->n = len;
}

static void md_final(md_ctx *c, unsigned char *out, int nwords) {
  uint64_t bits = c->len * 8;
  int i;
  c->buf[c->n++] = 0x80;
  if (c->n > 56) {
    memset(c->buf + c->n, 0, 64 - c->n);
    c->block(c, c->buf);
    c->n = 0;
  }
  memset(c->buf + c->n, 0, 56 - c->n);
  for (i = 0; i < 8; i++) c->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
  c->block(c, c->buf);
  for (i = 0; i < nwords; i++) {
    out[4 * i] = (unsigned char)(c->h[i] >> 24);
    out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
    out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
    out[4 * i + 3] = (unsigned char)c->h[i];
  }
}

/* ---------------------------------------------------------------- SHA-1 */

#define ROL(x, k) (((x) << (k)) | ((x) >> (32 - (k))))

static void sha1_block(md_ctx *c, const unsigned char *p) {
  uint32_t w[80], a, b, d, e, f, k, t, cc;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4];
  for (i = 0; i < 80; i++) {
    if (i < 20) f = (b & cc) | (~b & d), k = 0x5A827999;
    else if (i < 40) f = b ^ cc ^ d, k = 0x6ED9EBA1;
    else if (i < 60) f = (b & cc) | (b & d) | (cc & d), k = 0x8F1BBCDC;
    else f = b ^ cc ^ d, k = 0xCA62C1D6;
    t = ROL(a, 5) + f + e + k + w[i];
    e = d, d = cc, cc = ROL(b, 30), b = a, a = t;
  }
  c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e;
}

void ae_sha1(const void *a, size_t alen, const void *b, size_t blen, unsigned char out[20]) {
  static const uint32_t h0[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  md_ctx c;
  md_init(&c, h0, 5, sha1_block);
  md_update(&c, a, alen);
  md_update(&c, b, blen);
  md_final(&c, out, 5);
}

/* --------------------------------------------------------------- base64 */

void ae_base64(const unsigned char *in, size_t n, char *out) {
  static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i;
  for (i = 0; i + 2 < n; i += 3) {
    *out++ = T[in[i] >> 2];
    *out++ = T[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    *out++ = T[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
    *out++ = T[in[i + 2] & 63];
  }
  if (n - i == 1) {
    *out++ = T[in[i] >> 2];
    *out++ = T[(in[i] & 3) << 4];
    *out++ = '=';
    *out++ = '=';
  } else if (n - i == 2) {
    *out++ = T[in[i] >> 2];
    *out++ = T[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    *out++ = T[(in[i + 1] & 15) << 2];
    *out++ = '=';
  }
  *out = '\0';
}

/* ---------------------------------------------------------------- random */

int ae_random_fill(void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n, len -= (size_t)n;
  }
  return 0;
}

static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  size_t done = 0;
  char *p;
  luaL_argcheck(L, n >= 0 && n <= 16 * 1024 * 1024, 1, "size out of range");
#if LUA_VERSION_NUM >= 502
  p = luaL_buffinitsize(L, &b, (size_t)n);
#else
  luaL_buffinit(L, &b);
  p = NULL;
#endif
  while (done < (size_t)n) {
    char tmp[256];
    char *dst;
    size_t want = (size_t)n - done;
    ssize_t got;
#if LUA_VERSION_NUM >= 502
    dst = p + done;
#else
    if (want > sizeof tmp) want = sizeof tmp;
    dst = tmp;
#endif
    got = getrandom(dst, want, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return luaL_error(L, "getrandom: %s", strerror(errno));
    }
#if LUA_VERSION_NUM < 502
    luaL_addlstring(&b, tmp, (size_t)got);
#else
    (void)tmp;
#endif
    done += (size_t)got;
  }
#if LUA_VERSION_NUM >= 502
  luaL_pushresultsize(&b, (size_t)n);
#else
  (void)p;
  luaL_pushresult(&b);
#endif
  return 1;
}

/* ------------------------------------------------------- SHA-256, HMAC */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(md_ctx *c, const unsigned char *p) {
  uint32_t w[64], a, b, cc, d, e, f, g, h, t1, t2;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3];
  e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
  for (i = 0; i < 64; i++) {
    t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g, g = f, f = e, e = d + t1;
    d = cc, cc = b, b = a, a = t1 + t2;
  }
  c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
  c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_init(md_ctx *c) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  md_init(c, iv, 8, sha256_block);
}

static int l_sha256(lua_State *L) {
  size_t n;
  const char *d = luaL_checklstring(L, 1, &n);
  md_ctx c;
  unsigned char out[32];
  sha256_init(&c);
  md_update(&c, d, n);
  md_final(&c, out, 8);
  lua_pushlstring(L, (const char *)out, 32);
  return 1;
}

static int l_hmac_sha256(lua_State *L) {
  size_t kl, dl, i;
  const char *key = luaL_checklstring(L, 1, &kl);
  const char *data = luaL_checklstring(L, 2, &dl);
  unsigned char k[64], pad[64], inner[32], out[32];
  md_ctx c;
  memset(k, 0, sizeof k);
  if (kl > 64) {
    sha256_init(&c);
    md_update(&c, key, kl);
    md_final(&c, k, 8);
  } else {
    memcpy(k, key, kl);
  }
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  sha256_init(&c);
  md_update(&c, pad, 64);
  md_update(&c, data, dl);
  md_final(&c, inner, 8);
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  sha256_init(&c);
  md_update(&c, pad, 64);
  md_update(&c, inner, 32);
  md_final(&c, out, 8);
  lua_pushlstring(L, (const char *)out, 32);
  return 1;
}

void ae_open_digest(lua_State *L) {
  static const luaL_Reg funcs[] = {{"sha256", l_sha256},
                                   {"hmac_sha256", l_hmac_sha256},
                                   {"random_bytes", l_random_bytes},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}

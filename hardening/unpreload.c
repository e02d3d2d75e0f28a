/* make check-asan preloads the ASan runtime into lua5.4 (which is not
 * instrumented) together with this library, whose constructor takes the
 * sanitizer variables out of the environment again: the runtime has read
 * them by now, and the programs the specs start (sh, ps, aeflow) must not
 * inherit them. Uninstrumented tools such as procps' ps deadlock under a
 * preloaded ASan, and build-asan/aeflow links the runtime itself, with its
 * own options (san_defaults.c). */
#include <stdlib.h>

__attribute__((constructor)) static void ae_unpreload(void) {
  unsetenv("LD_PRELOAD");
  unsetenv("ASAN_OPTIONS");
  unsetenv("UBSAN_OPTIONS");
}

/* The one clock helper of the core: seconds as doubles, monotonic for
 * deadlines and waits, realtime for timestamps, and a deadline turned into a
 * poll() timeout. Header-only: every part that waits includes it. */
#ifndef AE_CLOCK_H
#define AE_CLOCK_H
#include <limits.h>
#include <time.h>

/* Deadlines further out than this many seconds are clamped (about 3 years). */
#define AE_LIMIT_SECONDS 1e8

static inline double ae_clock_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wall-clock seconds, to the microsecond (what os.time() users compare with). */
static inline double ae_clock_real(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000) * 1e-6;
}

/* Milliseconds from now until `deadline` (monotonic), rounded up so a wait
 * does not wake just before it, clamped to 0..INT_MAX. */
static inline int ae_clock_ms_until(double deadline) {
  double left = (deadline - ae_clock_mono()) * 1000 + 1;
  if (left <= 1) return 0;
  return left > INT_MAX ? INT_MAX : (int)left;
}
#endif

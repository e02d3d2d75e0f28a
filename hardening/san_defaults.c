/* Sanitizer defaults for build-asan/aeflow (make check-asan only, never the
 * release build). The specs start aeflow with a clean environment, so the
 * options cannot come from ASAN_OPTIONS; the runtime asks for these instead.
 * Reports go to files under AE_SAN_LOG (engine output is a log nobody reads
 * when a spec passes), and check-asan fails when any exists. Leaks are
 * checked: aeflow closes its Lua state before it exits. */
#ifndef AE_SAN_LOG
#define AE_SAN_LOG "/tmp/aeflow-san"
#endif

const char *__asan_default_options(void);
const char *__ubsan_default_options(void);

const char *__asan_default_options(void) {
  return "detect_leaks=1:allocator_may_return_null=1:verify_asan_link_order=0:log_path=" AE_SAN_LOG;
}

const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1:log_path=" AE_SAN_LOG;
}

# Hardening gates: sanitizers, C lint, format check, fuzzing (CI runs ci-hardening).
#   make check-asan    the core and aeflow built with clang ASan+UBSan into build-asan/,
#                      then the whole busted suite against that build
#   make lint-c        cppcheck and clang-tidy (.clang-tidy) on csrc/*.c
#   make format-check  fails when a C file differs from .clang-format (prints how many lines, per file)
#   make fuzz-short    every libFuzzer target in fuzz/ for FUZZ_SECONDS (default 30) each
#   make fuzz          the same, FUZZ_LONG_SECONDS (default 600) each; see docs/hardening.md
#   make ci-hardening  lint-c, check-asan and fuzz-short: what CI runs
# Their packages are installed by these targets only (deps-hardening), not by
# `make test`; check-asan runs every spec, so it also installs the packages of
# the suite and of each tested capability (not the benchmarks').
DEB_PACKAGES_HARDENING ?= clang clang-tidy clang-format cppcheck libclang-rt-14-dev
DEB_PACKAGES_ALL += $(DEB_PACKAGES_HARDENING)

ASAN_CC    ?= clang
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
CPPCHECK   ?= cppcheck
CLANG_TIDY ?= clang-tidy
CLANG_FORMAT ?= clang-format
FUZZ_SECONDS ?= 30
FUZZ_LONG_SECONDS ?= 600
FUZZ_TARGETS = $(patsubst fuzz/%.c,%,$(filter-out fuzz/fuzz_common.c,$(wildcard fuzz/fuzz_*.c)))

# The ASan runtime as a shared library: lua5.4 is not instrumented, so the
# runtime must be preloaded into it and core.so linked against that same copy.
# The runtime's name carries the CPU (the triplet's first part: x86_64, aarch64).
ASAN_ARCH = $(firstword $(subst -, ,$(MULTIARCH)))
ASAN_RT = $(shell $(ASAN_CC) -print-file-name=libclang_rt.asan-$(ASAN_ARCH).so 2>/dev/null)
SAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_CFLAGS = -O1 -g $(SAN_FLAGS) $(WARN) -std=gnu11 -fPIC -D_GNU_SOURCE \
              $(shell $(PKG_CONFIG) --cflags $(LUA_PC) $(CORE_PKGS) 2>/dev/null)
ASAN_OBJ = $(CORE_SRC:csrc/%.c=$(ASAN_BUILD)/obj/%.o)
ASAN_REPORTS = $(CURDIR)/$(ASAN_BUILD)/reports
ASAN_ENV = ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:verify_asan_link_order=0 \
           UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
           LD_PRELOAD='$(ASAN_RT) $(CURDIR)/$(ASAN_BUILD)/unpreload.so' \
           AEFLOW_BIN=$(CURDIR)/$(ASAN_BUILD)/aeflow \
           LUA_CPATH='$(CURDIR)/$(ASAN_BUILD)/?.so;;'

.PHONY: deps-hardening check-asan asan-build lint-c cppcheck clang-tidy format-check fuzz-build fuzz-short fuzz ci-hardening

ci-hardening: format-check lint-c check-asan fuzz-short

deps-hardening: deps-test
	$(call install_packages,$(DEB_PACKAGES_HARDENING))

# ---------------------------------------------------------------- sanitizers

asan-build: deps-hardening $(ASAN_BUILD)/analytics_engine/core.so $(ASAN_BUILD)/aeflow $(ASAN_BUILD)/unpreload.so

$(ASAN_BUILD)/unpreload.so: hardening/unpreload.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -shared -fPIC -o $@ $<

$(eval $(call object_rule,$(ASAN_BUILD),$$(ASAN_CC),$$(ASAN_CFLAGS)))

$(ASAN_BUILD)/analytics_engine/core.so: $(ASAN_OBJ)
	@mkdir -p $(dir $@)
	$(ASAN_CC) -shared -shared-libasan $(SAN_FLAGS) -o $@ $(ASAN_OBJ) $(CORE_LIBS)

# aeflow runs with a clean environment in the specs, so its sanitizer options
# are compiled in (hardening/san_defaults.c), and it finds the shared runtime
# by rpath.
$(ASAN_BUILD)/aeflow: csrc/aeflow.c hardening/san_defaults.c $(ASAN_OBJ) $(HEADERS) mk/hardening.mk
	$(ASAN_CC) $(ASAN_CFLAGS) -shared-libasan -Wl,-rpath,$(dir $(ASAN_RT)) -DAE_LUADIR='"$(LUADIR)"' \
	  -DAE_SAN_LOG='"$(ASAN_REPORTS)/aeflow"' \
	  -o $@ csrc/aeflow.c hardening/san_defaults.c $(ASAN_OBJ) $(CORE_LIBS) $(LUA_LIBS) -lm -ldl

# busted runs in-process (--ignore-lua) so the preloaded runtime stays under
# it; build/ must exist too for helpers that are separate lua5.4 scripts.
check-asan: deps-test deps-report deps-jupyter deps-openresty build build-jit asan-build
	@test -f "$(ASAN_RT)" || { echo "check-asan: no ASan runtime ($(ASAN_RT)); install libclang-rt-14-dev" >&2; exit 1; }
	@rm -rf $(ASAN_REPORTS); mkdir -p $(ASAN_REPORTS)
	$(ASAN_ENV) $(LUA) $$(command -v $(BUSTED)) --ignore-lua --cpath='$(CURDIR)/$(ASAN_BUILD)/?.so' \
	  -o utfTerminal spec
	@if [ -n "$$(ls -A $(ASAN_REPORTS))" ]; then \
	  echo "check-asan: sanitizer reports from aeflow processes:" >&2; cat $(ASAN_REPORTS)/* >&2; exit 1; fi

# ---------------------------------------------------------------------- lint

LINT_INC = $(shell $(PKG_CONFIG) --cflags-only-I $(LUA_PC) $(CORE_PKGS) 2>/dev/null)
C_FILES  = $(wildcard csrc/*.c)

lint-c: cppcheck clang-tidy

# System headers stay out (cppcheck would parse all of libcurl's); the Lua
# headers go in so its API macros are understood.
cppcheck: deps-hardening
	$(CPPCHECK) --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  --std=c11 -D_GNU_SOURCE -DLUA_VERSION_NUM=504 -Icsrc \
	  --suppress=missingIncludeSystem $(C_FILES)

clang-tidy: deps-hardening
	$(CLANG_TIDY) --quiet $(C_FILES) -- -std=gnu11 -D_GNU_SOURCE -Icsrc $(LINT_INC) -include hardening/lint_noreturn.h

# A CI gate: prints how many lines of each file clang-format would change and
# fails when any would; nothing is rewritten.
format-check: deps-hardening
	@total=0; for f in csrc/*.c csrc/*.h fuzz/*.c fuzz/*.h hardening/*.c; do \
	  [ -f "$$f" ] || continue; \
	  n=$$($(CLANG_FORMAT) --style=file "$$f" | diff "$$f" - | grep -c '^<'); \
	  total=$$((total + n)); \
	  [ "$$n" = 0 ] || printf '%6d  %s\n' "$$n" "$$f"; \
	done; echo "format-check: $$total lines differ from .clang-format"; \
	[ "$$total" = 0 ] || { echo "format-check: run clang-format -i --style=file on the files above" >&2; exit 1; }

# ------------------------------------------------------------------- fuzzing

FUZZ_CFLAGS = -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer $(WARN) -std=gnu11 -D_GNU_SOURCE -Icsrc \
              $(shell $(PKG_CONFIG) --cflags $(LUA_PC) $(CORE_PKGS) 2>/dev/null)
FUZZ_OBJ = $(CORE_SRC:csrc/%.c=$(FUZZ_BUILD)/obj/%.o)

$(eval $(call object_rule,$(FUZZ_BUILD),$$(ASAN_CC),$$(FUZZ_CFLAGS)))

$(FUZZ_BUILD)/%: fuzz/%.c fuzz/fuzz_common.c fuzz/fuzz_common.h $(FUZZ_OBJ) $(HEADERS)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -DAE_SRCDIR='"$(CURDIR)"' -o $@ $< fuzz/fuzz_common.c \
	  $(FUZZ_OBJ) $(CORE_LIBS) $(LUA_LIBS) -lpthread -lm -ldl

fuzz-build: deps-hardening $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)

# Each target from its committed seeds; new finds go to build-fuzz/corpus/,
# crashes to build-fuzz/crash-*. Leak detection is on (the default).
define run_fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  echo "fuzz: $$t for $(1) s"; \
	  $(FUZZ_BUILD)/$$t -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
	    -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/$$t- \
	    $(FUZZ_BUILD)/corpus/$$t fuzz/corpus/$$t 2>$(FUZZ_BUILD)/$$t.log \
	    || { tail -60 $(FUZZ_BUILD)/$$t.log >&2; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' $(FUZZ_BUILD)/$$t.log | tail -2; \
	done
endef

fuzz-short: fuzz-build
	$(call run_fuzz,$(FUZZ_SECONDS))

fuzz: fuzz-build
	$(call run_fuzz,$(FUZZ_LONG_SECONDS))

# Keep the instrumented objects (make would delete them as intermediates).
.SECONDARY: $(ASAN_OBJ) $(FUZZ_OBJ)

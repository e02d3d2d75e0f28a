# Benchmarks (issue 7): `make bench` runs bench/run.sh; not part of `make test`.
# `make bench-deps` installs what only the benchmarks need (as root).

DEB_PACKAGES_BENCH ?= nginx python3-requests wrk hyperfine curl valgrind
BENCH_RAW_CURL = $(BUILD)/bench/raw_curl

.PHONY: bench bench-deps bench-build

bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES_BENCH)"

$(BENCH_RAW_CURL): bench/raw_curl.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(WARN) -std=gnu11 -o $@ bench/raw_curl.c \
	  $(shell $(PKG_CONFIG) --cflags --libs libcurl 2>/dev/null || echo -lcurl)

bench-build: build $(BENCH_RAW_CURL)

# BENCH=percall,concurrency,startup,callgrind,engine picks some; default all.
bench: deps bench-deps bench-build
	BUILD=$(CURDIR)/$(BUILD) bash bench/run.sh $(BENCH)

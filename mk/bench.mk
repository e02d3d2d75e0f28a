# Benchmarks: `make bench` runs bench/run.sh (BENCH=percall,concurrency,startup,
# callgrind,engine picks some; default all); `make bench-engine` the local
# engine's load benchmark. Neither is part of `make test`.

DEB_PACKAGES_BENCH ?= $(DEB_PACKAGES_BUILD) nginx python3 python3-requests wrk hyperfine curl valgrind procps
DEB_PACKAGES_ALL += $(DEB_PACKAGES_BENCH)
BENCH_RAW_CURL = $(BUILD)/bench/raw_curl

.PHONY: bench bench-deps bench-build bench-engine bench-flood

bench-deps:
	$(call install_packages,$(DEB_PACKAGES_BENCH))

$(BENCH_RAW_CURL): bench/raw_curl.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(WARN) -std=gnu11 -o $@ bench/raw_curl.c \
	  $(shell $(PKG_CONFIG) --cflags --libs libcurl 2>/dev/null || echo -lcurl)

bench-build: build $(BENCH_RAW_CURL)

bench: bench-deps bench-build
	BUILD=$(CURDIR)/$(BUILD) bash bench/run.sh $(BENCH)

bench-engine: bench-deps build
	sh bench/engine_load.sh

bench-flood: build
	sh bench/flood.sh

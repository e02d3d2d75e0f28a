# The local engine (issue 4). Its SQLite store, quotas, spark-submit, TLS and
# auth specs run in the busted suite; core_sqlite_spec.lua runs under
# `make valgrind` with the other core specs. The load benchmark needs wrk,
# installed only for this target (a target-specific addition that `deps`
# inherits when it runs as this target's prerequisite).
.PHONY: bench-engine
bench-engine: DEB_PACKAGES += wrk
bench-engine: deps build
	sh bench/engine_load.sh

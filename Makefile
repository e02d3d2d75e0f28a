# analytics-engine for Lua: build, test, demo, install.
#   make            builds the C core and aeflow, nothing else (no package is installed)
#   make demo       installs what the demo needs, builds, runs two workflows on a local engine
#   make test       installs what the suite needs, builds, lints, runs the suite and every
#                   capability's own test target (TEST_EXTRA): what CI runs
#   make deps       installs every package any target here may need (as root)
# Optional capabilities live in mk/<capability>.mk, each with its own packages
# (DEB_PACKAGES_<CAP>), its own deps-<cap> target and, when it has specs, its own
# test target that `make test` runs.

.DEFAULT_GOAL := all

LUA        ?= lua5.4
LUA_PC     ?= lua5.4
BUSTED     ?= busted
CC         ?= cc
PKG_CONFIG ?= pkg-config
PREFIX     ?= /usr/local
LUA_VER    ?= 5.4
BUILD      ?= build
# The Debian multiarch triplet (x86_64-linux-gnu, aarch64-linux-gnu, ...): from
# the compiler, or dpkg when the compiler does not know it.
MULTIARCH  ?= $(or $(shell $(CC) -print-multiarch 2>/dev/null),$(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null))
LUADIR     ?= $(PREFIX)/share/lua/$(LUA_VER)
# Debian's lua5.4 searches /usr/lib/<triplet>/lua/5.4 and /usr/local/lib/lua/5.4.
LIBDIR     ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/$(MULTIARCH)/lua/$(LUA_VER),$(PREFIX)/lib/lua/$(LUA_VER))
BINDIR     ?= $(PREFIX)/bin

# Debian packages. `make` itself installs nothing; the targets below that need
# packages install the missing ones first (as root) or say which are missing.
#   DEB_PACKAGES_BUILD  compile and link the core and aeflow
#   DEB_PACKAGES_DEMO   + what `make demo`'s applications run with (python3)
#   DEB_PACKAGES        + what the suite and `make lint` need; capabilities whose
#                       specs run in the suite add theirs here
DEB_PACKAGES_BUILD ?= gcc libc6-dev make pkg-config lua5.4 liblua5.4-dev lua-cjson \
                      libcurl4-openssl-dev libmicrohttpd-dev libsqlite3-dev libwslay-dev ca-certificates
DEB_PACKAGES_DEMO  ?= $(DEB_PACKAGES_BUILD) python3 procps
DEB_PACKAGES       ?= $(DEB_PACKAGES_DEMO) lua-busted lua-check luarocks git zip unzip openssl tmux
# Every capability adds its packages here too, for `make deps`.
DEB_PACKAGES_ALL    = $(DEB_PACKAGES)

# Specs that need a capability's packages run in that capability's test
# target (mk/*.mk adds them to CAPABILITY_SPECS and its target to TEST_EXTRA);
# every other spec runs in the suite, new ones included.
TEST_EXTRA ?=
CAPABILITY_SPECS =

# The C core: every csrc/*.c but aeflow.c's main, so a new source file needs no
# edit here (the rockspecs list them; spec/rockspec_spec.lua checks they agree).
CORE_SRC  = $(filter-out csrc/aeflow.c,$(wildcard csrc/*.c))
CORE_PKGS = libcurl libmicrohttpd sqlite3
CORE_LDLIBS = -lwslay -pthread  # Debian's libwslay-dev ships no pkg-config file; fs_sync.c's thread
HEADERS   = $(wildcard csrc/*.h)

WARN    ?= -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -fPIC -D_GNU_SOURCE \
             $(shell $(PKG_CONFIG) --cflags $(LUA_PC) $(CORE_PKGS) 2>/dev/null)
CORE_LIBS  = $(shell $(PKG_CONFIG) --libs $(CORE_PKGS) 2>/dev/null) $(CORE_LDLIBS)
LUA_LIBS   = $(shell $(PKG_CONFIG) --libs $(LUA_PC) 2>/dev/null)

CORE_OBJ = $(CORE_SRC:csrc/%.c=$(BUILD)/obj/%.o)
CORE_SO  = $(BUILD)/analytics_engine/core.so
AEFLOW   = $(BUILD)/aeflow

# The one object rule; every build variant (this one, build-jit, build-asan,
# build-fuzz) instantiates it with its directory, compiler and flags:
#   $(eval $(call object_rule,DIR,$$(COMPILER),$$(FLAGS)))
define object_rule
$(1)/obj/%.o: csrc/%.c $$(HEADERS)
	@mkdir -p $$(dir $$@)
	$(2) $(3) -c $$< -o $$@
endef

# $(call install_packages,LIST): apt-get install those of LIST that are missing
# (needs root then), or nothing when all are there.
define install_packages
	@missing=""; for p in $(sort $(1)); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "$@: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "$@: need root to run apt-get install$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	    || { echo "$@: apt-get install$$missing failed" >&2; exit 1; }; \
	fi
endef

# A capability whose specs need packages the suite does not install:
#   $(eval $(call capability,NAME,$$(PACKAGES),TEST_TARGET,$$(SPECS)))
# makes deps-NAME (installs the packages) and TEST_TARGET (deps-NAME, the
# build, then the specs), adds the target to `make test` (TEST_EXTRA) and
# keeps the specs out of the suite (CAPABILITY_SPECS).
define capability
DEB_PACKAGES_ALL += $(2)
CAPABILITY_SPECS += $(4)
TEST_EXTRA += $(3)
.PHONY: deps-$(1) $(3)
deps-$(1): deps-test
	$$(call install_packages,$(2))
$(3): deps-$(1) build
	$$(BUSTED) --lua=$$(LUA) -o utfTerminal $(4)
endef

.PHONY: all deps deps-build deps-demo deps-test build test suite demo lint install clean

all: build

-include mk/*.mk

SUITE_SPECS = $(filter-out $(CAPABILITY_SPECS),$(sort $(wildcard spec/*_spec.lua)))

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
export AEFLOW_BIN := $(CURDIR)/$(AEFLOW)

deps:
	$(call install_packages,$(DEB_PACKAGES_ALL))

deps-build:
	$(call install_packages,$(DEB_PACKAGES_BUILD))

deps-demo:
	$(call install_packages,$(DEB_PACKAGES_DEMO))

deps-test:
	$(call install_packages,$(DEB_PACKAGES))

build: $(CORE_SO) $(AEFLOW)

$(eval $(call object_rule,$(BUILD),$$(CC),$$(ALL_CFLAGS)))

$(CORE_SO): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(CORE_OBJ) $(CORE_LIBS)

$(AEFLOW): csrc/aeflow.c $(CORE_OBJ) $(HEADERS)
	$(CC) $(ALL_CFLAGS) -DAE_LUADIR='"$(LUADIR)"' -o $@ csrc/aeflow.c $(CORE_OBJ) $(CORE_LIBS) $(LUA_LIBS) -lm -ldl

# The suite, then each capability's own target (which installs its packages).
test: deps-test build lint suite
	@for t in $(TEST_EXTRA); do $(MAKE) --no-print-directory $$t || exit 1; done

# The specs that need no optional capability: what to run after changing the
# client, the runner or the engine.
suite: deps-test build
	$(BUSTED) --lua=$(LUA) -o utfTerminal $(SUITE_SPECS)

# The client in a plain script, then a real pipeline: runtime and configs set,
# the history server around the seed's three sample applications.
demo: deps-demo build
	$(AEFLOW) exec workflows/quickstart.lua
	$(AEFLOW) run workflows/seed_samples.lua

lint: deps-test
	luacheck -q lua spec workflows bin

install: build install-docs
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/analytics_engine $(DESTDIR)$(LUADIR)
	install -m 0755 $(AEFLOW) $(DESTDIR)$(BINDIR)/aeflow
	install -m 0755 $(CORE_SO) $(DESTDIR)$(LIBDIR)/analytics_engine/core.so
	cd lua && find analytics_engine -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(LUADIR)/{} \;
	install -d $(DESTDIR)$(PREFIX)/share/analytics-engine/apps
	install -m 0644 workflows/apps/* $(DESTDIR)$(PREFIX)/share/analytics-engine/apps/

clean:
	rm -rf $(BUILD) build-jit build-asan build-fuzz

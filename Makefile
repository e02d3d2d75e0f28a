# analytics-engine for Lua: build, test, demo, install.
# `make test` is what CI runs; `make demo` starts a local engine and runs a pipeline.

LUA        ?= lua5.4
LUA_PC     ?= lua5.4
BUSTED     ?= busted
CC         ?= cc
PKG_CONFIG ?= pkg-config
PREFIX     ?= /usr/local
LUA_VER    ?= 5.4
LUADIR     ?= $(PREFIX)/share/lua/$(LUA_VER)
LIBDIR     ?= $(PREFIX)/lib/x86_64-linux-gnu/lua/$(LUA_VER)
BINDIR     ?= $(PREFIX)/bin
BUILD      ?= build

# Debian packages the build, the tests and the demo need. Installed by `make deps`
# when missing (as root); nothing else is assumed to be on the machine.
DEB_PACKAGES ?= gcc libc6-dev make pkg-config lua5.4 liblua5.4-dev lua-cjson lua-busted luarocks \
                libcurl4-openssl-dev libmicrohttpd-dev libsqlite3-dev libwslay-dev lua-check valgrind python3 \
                ca-certificates openssl procps

# Each capability may add packages, sources, targets and extra test runs in
# its own mk/<name>.mk (DEB_PACKAGES += ..., TEST_EXTRA += target).
TEST_EXTRA ?=
CORE_SRC  = csrc/core.c csrc/http.c csrc/server.c csrc/process.c csrc/fs.c csrc/digest.c csrc/ws.c csrc/ws_frame.c csrc/ws_client.c csrc/ws_server.c csrc/sqlite.c
CORE_PKGS = libcurl libmicrohttpd sqlite3
CORE_LDLIBS = -lwslay   # Debian's libwslay-dev ships no pkg-config file
-include mk/*.mk

WARN    ?= -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -fPIC -D_GNU_SOURCE \
             $(shell $(PKG_CONFIG) --cflags $(LUA_PC) $(CORE_PKGS) 2>/dev/null)
CORE_LIBS  = $(shell $(PKG_CONFIG) --libs $(CORE_PKGS) 2>/dev/null) $(CORE_LDLIBS)
LUA_LIBS   = $(shell $(PKG_CONFIG) --libs $(LUA_PC) 2>/dev/null)

CORE_OBJ = $(CORE_SRC:csrc/%.c=$(BUILD)/obj/%.o)
HEADERS  = $(wildcard csrc/*.h)

CORE_SO  = $(BUILD)/analytics_engine/core.so
AEFLOW   = $(BUILD)/aeflow

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
export AEFLOW_BIN := $(CURDIR)/$(AEFLOW)

.PHONY: all deps build test demo lint valgrind install uninstall rock clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: need root to run apt-get install$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	    || { echo "deps: apt-get install$$missing failed" >&2; exit 1; }; \
	fi

build: $(CORE_SO) $(AEFLOW)

$(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(CORE_SO): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(CORE_OBJ) $(CORE_LIBS)

$(AEFLOW): csrc/aeflow.c $(CORE_OBJ) $(HEADERS)
	$(CC) $(ALL_CFLAGS) -DAE_LUADIR='"$(LUADIR)"' -o $@ csrc/aeflow.c $(CORE_OBJ) $(CORE_LIBS) $(LUA_LIBS) -lm -ldl

test: deps build lint
	$(BUSTED) --lua=$(LUA) -o utfTerminal spec
	@for t in $(TEST_EXTRA); do $(MAKE) --no-print-directory $$t || exit 1; done

# The client in a plain script, then a real pipeline: runtime and configs set,
# the history server around the seed's three sample applications.
demo: deps build
	$(AEFLOW) exec workflows/quickstart.lua
	$(AEFLOW) run workflows/seed_samples.lua

lint: deps
	luacheck -q lua spec workflows bin

# busted re-executes itself under --lua; --ignore-lua keeps the specs in the
# process valgrind watches.
valgrind: deps build
	valgrind --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite \
	  --show-leak-kinds=definite $(LUA) $$(command -v $(BUSTED)) --ignore-lua \
	  $(wildcard spec/core_*_spec.lua)

install: build install-docs
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/analytics_engine $(DESTDIR)$(LUADIR)
	install -m 0755 $(AEFLOW) $(DESTDIR)$(BINDIR)/aeflow
	install -m 0755 $(CORE_SO) $(DESTDIR)$(LIBDIR)/analytics_engine/core.so
	cd lua && find analytics_engine -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(LUADIR)/{} \;
	install -d $(DESTDIR)$(PREFIX)/share/analytics-engine/apps
	install -m 0644 workflows/apps/* $(DESTDIR)$(PREFIX)/share/analytics-engine/apps/

rock: deps
	luarocks --lua-version=5.4 make --deps-mode=none analytics-engine-scm-1.rockspec

clean:
	rm -rf $(BUILD) build-jit build-asan build-fuzz

# Embedding in nginx/OpenResty and other LuaJIT hosts. The same csrc/*.c
# built against LuaJIT 2.1 (the Lua 5.1 API, through csrc/compat.h alone) into
# build-jit/; `make test-openresty` (part of `make test`) installs Debian's
# nginx with the lua module and LuaJIT, runs the client's specs on LuaJIT and
# spec/ngx_spec.lua against a real nginx.
# Debian's `luajit`/`libluajit-5.1-dev` conflict with libnginx-mod-http-lua's
# libluajit2-5.1-*: these are the luajit2 ones.
DEB_PACKAGES_OPENRESTY ?= nginx libnginx-mod-http-lua luajit2 libluajit2-5.1-dev
DEB_PACKAGES_ALL += $(DEB_PACKAGES_OPENRESTY)
NGX_SPECS = spec/ngx_spec.lua
CAPABILITY_SPECS += $(NGX_SPECS)
TEST_EXTRA += test-openresty

LUAJIT     ?= luajit
LUAJIT_PC  ?= luajit
BUILD_JIT  ?= build-jit
JIT_CORE_SO = $(BUILD_JIT)/analytics_engine/core.so
JIT_OBJ     = $(CORE_SRC:csrc/%.c=$(BUILD_JIT)/obj/%.o)
# Not linked against libluajit: the host (luajit, nginx) provides the API, as
# for any Lua C module.
JIT_CFLAGS  = $(CFLAGS) $(WARN) -std=gnu11 -fPIC -D_GNU_SOURCE \
              $(shell $(PKG_CONFIG) --cflags $(LUAJIT_PC) $(CORE_PKGS) 2>/dev/null)

# The specs of the client path and of the C core's HTTP session, on LuaJIT.
JIT_SPECS ?= spec/util_spec.lua spec/retry_spec.lua spec/errors_spec.lua spec/auth_spec.lua \
             spec/config_spec.lua spec/api_spec.lua spec/client_spec.lua \
             spec/core_http_spec.lua spec/core_process_spec.lua spec/core_server_spec.lua

.PHONY: deps-openresty build-jit test-jit test-openresty clean-jit

deps-openresty: deps-test
	$(call install_packages,$(DEB_PACKAGES_OPENRESTY))

build-jit: $(JIT_CORE_SO)

$(eval $(call object_rule,$(BUILD_JIT),$$(CC),$$(JIT_CFLAGS)))

$(JIT_CORE_SO): $(JIT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(JIT_OBJ) $(CORE_LIBS)

# busted re-executes itself under luajit; --cpath puts the LuaJIT core first
# (the .busted default points at the 5.4 build).
test-jit: deps-openresty build build-jit
	$(BUSTED) --lua=$(LUAJIT) --cpath='$(BUILD_JIT)/?.so' -o utfTerminal $(JIT_SPECS)

# ngx_spec.lua also checks that phases without cosockets fall back to the curl
# transport (that needs the LuaJIT core) and runs a Jupyter kernel session in a
# handler (the engine's /jkg/api needs Jupyter).
test-openresty: deps-openresty deps-jupyter build build-jit test-jit
	$(BUSTED) --lua=$(LUA) -o utfTerminal $(NGX_SPECS)

clean-jit:
	rm -rf $(BUILD_JIT)

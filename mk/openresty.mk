# Embedding in OpenResty and other LuaJIT hosts (issue 6).
# The same csrc/*.c built against LuaJIT 2.1 (the Lua 5.1 API, through
# csrc/compat.h alone) into build-jit/, the client's specs run on LuaJIT, and
# Debian's nginx with the lua module for spec/ngx_spec.lua.
# Debian's `luajit`/`libluajit-5.1-dev` conflict with libnginx-mod-http-lua's
# libluajit2-5.1-*: these are the luajit2 ones.
DEB_PACKAGES += nginx libnginx-mod-http-lua luajit2 libluajit2-5.1-dev

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

.PHONY: build-jit test-jit clean-jit

build-jit: $(JIT_CORE_SO)

$(BUILD_JIT)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(JIT_CFLAGS) -c $< -o $@

$(JIT_CORE_SO): $(JIT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(JIT_OBJ) $(CORE_LIBS)

# busted re-executes itself under luajit; --cpath puts the LuaJIT core first
# (the .busted default points at the 5.4 build).
test-jit: deps build build-jit
	$(BUSTED) --lua=$(LUAJIT) --cpath='$(BUILD_JIT)/?.so' -o utfTerminal $(JIT_SPECS)

clean-jit:
	rm -rf $(BUILD_JIT)

TEST_EXTRA += test-jit

# spec/ngx_spec.lua (in the main suite) checks that nginx phases without
# cosockets fall back to the curl transport: that needs the LuaJIT core.
test: build-jit

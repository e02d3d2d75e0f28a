# The rock (analytics-engine-*.rockspec, luarocks' "make" build type).
#   make rock          the source rock build/rock/analytics-engine-$(ROCK_VERSION).src.rock,
#                      packed by `luarocks pack` from the committed HEAD (see below)
#   make rock-build    \ what luarocks runs (with its LUA, LUA_INCDIR, CFLAGS,
#   make rock-install  / LIBFLAG, LUADIR, LIBDIR, BINDIR); the Lua version decides:
# Lua 5.4 gets everything (client, core, runner, engine, reports, bin/aeflow);
# Lua 5.1/LuaJIT (OpenResty) and 5.2/5.3 get the client and the core only: the
# runner, the DSL, the engine and reports use Lua 5.3+ operators.
ROCK_VERSION ?= 0.1.0-1
ROCK_SPEC     = analytics-engine-$(ROCK_VERSION).rockspec
ROCK          = $(BUILD)/rock/analytics-engine-$(ROCK_VERSION).src.rock
# The URL the rockspecs fetch from, and the release tag of the versioned one.
ROCK_GIT_URL  = https://example.invalid/analytics-engine-lua.git
ROCK_TAG      = v$(firstword $(subst -, ,$(ROCK_VERSION)))
DEB_PACKAGES_ROCK ?= $(DEB_PACKAGES_BUILD) luarocks git zip unzip
DEB_PACKAGES_ALL += $(DEB_PACKAGES_ROCK)

# The Lua version luarocks builds for: from its interpreter, else its name.
ROCK_LUA_VER = $(or $(shell $(LUA) -e 'io.write((_VERSION:match("%d+%.%d+")))' 2>/dev/null),\
                    $(if $(findstring luajit,$(LUA)),5.1,$(patsubst lua%,%,$(notdir $(LUA)))))
ROCK_BUILD   = $(BUILD)/rock-$(ROCK_LUA_VER)
ROCK_CFLAGS  = $(CFLAGS) -Wall -Wextra -Wno-unused-parameter -std=gnu11 -fPIC -D_GNU_SOURCE \
               -I$(LUA_INCDIR) $(shell $(PKG_CONFIG) --cflags $(CORE_PKGS) 2>/dev/null)
ROCK_OBJ     = $(CORE_SRC:csrc/%.c=$(ROCK_BUILD)/obj/%.o)
# Lua 5.3+ only: everything but the client layer.
LUA54_ONLY   = analytics_engine/engine/% analytics_engine/workflow/% analytics_engine/report/% \
               analytics_engine/cli/%
LUA_MODULES  = $(patsubst lua/%,%,$(shell find lua/analytics_engine -name '*.lua' | sort))
ROCK_MODULES = $(if $(filter 5.4,$(ROCK_LUA_VER)),$(LUA_MODULES),$(filter-out $(LUA54_ONLY),$(LUA_MODULES)))

.PHONY: rock deps-rock rock-build rock-install

deps-rock:
	$(call install_packages,$(DEB_PACKAGES_ROCK))

$(eval $(call object_rule,$(ROCK_BUILD),$$(CC),$$(ROCK_CFLAGS)))

$(ROCK_BUILD)/analytics_engine/core.so: $(ROCK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(or $(LIBFLAG),-shared) -o $@ $(ROCK_OBJ) $(CORE_LIBS)

rock-build: $(ROCK_BUILD)/analytics_engine/core.so
	@test -n "$(ROCK_LUA_VER)" || { echo "rock-build: cannot tell the Lua version of LUA=$(LUA)" >&2; exit 1; }

rock-install:
	install -d $(LIBDIR)/analytics_engine $(LUADIR)
	install -m 0755 $(ROCK_BUILD)/analytics_engine/core.so $(LIBDIR)/analytics_engine/core.so
	cd lua && for f in $(ROCK_MODULES); do install -D -m 0644 $$f $(LUADIR)/$$f || exit 1; done
	$(if $(filter 5.4,$(ROCK_LUA_VER)),install -D -m 0755 bin/aeflow $(BINDIR)/aeflow)

# `luarocks pack` fetches the rockspec's git URL at its tag; here git reads
# that URL as a throwaway bare copy of HEAD with the tag, so packing needs no
# network and no tag in this repository (the release tag is made on publishing).
rock: deps-rock
	@rm -rf $(BUILD)/rock && mkdir -p $(BUILD)/rock
	git init -q --bare $(BUILD)/rock/origin.git
	git push -q $(BUILD)/rock/origin.git HEAD:refs/heads/main HEAD:refs/tags/$(ROCK_TAG)
	git -C $(BUILD)/rock/origin.git symbolic-ref HEAD refs/heads/main
	cd $(BUILD)/rock && GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=url.$(abspath $(BUILD))/rock/origin.git.insteadOf \
	  GIT_CONFIG_VALUE_0=$(ROCK_GIT_URL) luarocks --lua-version=5.4 pack $(CURDIR)/$(ROCK_SPEC) >pack.log \
	  || { cat pack.log >&2; exit 1; }
	@rm -rf $(BUILD)/rock/origin.git $(BUILD)/rock/pack.log
	@echo "rock: $(ROCK)"

# `make valgrind`: the C core's specs under valgrind, no definite leaks (CI
# runs it after `make test`). busted re-executes itself under --lua;
# --ignore-lua keeps the specs in the process valgrind watches.
DEB_PACKAGES_VALGRIND ?= valgrind
DEB_PACKAGES_ALL += $(DEB_PACKAGES_VALGRIND)

.PHONY: valgrind

valgrind: deps-test build
	$(call install_packages,$(DEB_PACKAGES_VALGRIND))
	valgrind --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite \
	  --show-leak-kinds=definite $(LUA) $$(command -v $(BUSTED)) --ignore-lua \
	  $(wildcard spec/core_*_spec.lua)

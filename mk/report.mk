# Reports and the engine's page as a browser sees them: their specs render
# HTML in chromium and check it with tidy; `aeflow graph --format svg|png`
# needs Graphviz's dot. `make test-report` (part of `make test`) installs them
# and runs those specs.
DEB_PACKAGES_REPORT ?= chromium tidy graphviz
DEB_PACKAGES_ALL += $(DEB_PACKAGES_REPORT)
REPORT_SPECS = spec/report_spec.lua spec/engine_page_spec.lua
CAPABILITY_SPECS += $(REPORT_SPECS)
TEST_EXTRA += test-report

.PHONY: deps-report test-report

deps-report: deps-test
	$(call install_packages,$(DEB_PACKAGES_REPORT))

test-report: deps-report build
	$(BUSTED) --lua=$(LUA) -o utfTerminal $(REPORT_SPECS)

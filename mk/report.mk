# Reports and the engine's page as a browser sees them: their specs render
# HTML in chromium and check it with tidy; `aeflow graph --format svg|png`
# needs Graphviz's dot. `make test-report` (part of `make test`) installs them
# and runs those specs.
DEB_PACKAGES_REPORT ?= chromium tidy graphviz
REPORT_SPECS = spec/report_spec.lua spec/engine_page_spec.lua
$(eval $(call capability,report,$$(DEB_PACKAGES_REPORT),test-report,$$(REPORT_SPECS)))

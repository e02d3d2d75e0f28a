# Seeing what ran (issue 9): the report's and the engine page's browser specs
# need chromium and tidy, `aeflow graph --format svg|png` needs Graphviz, and
# `make docs` runs LDoc over the public modules into $(BUILD)/docs.
DEB_PACKAGES += chromium graphviz tidy lua-ldoc man-db

LDOC    ?= ldoc
MANDIR  ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions

.PHONY: docs install-docs

docs:
	@command -v $(LDOC) >/dev/null || { echo "docs: ldoc is missing: install Debian's lua-ldoc (make deps)" >&2; exit 1; }
	$(LDOC) -q -d $(BUILD)/docs .
	@echo "docs: $(BUILD)/docs/index.html"

# The man page and the bash completion; `make install` runs it when the
# Makefile's install target lists it as a prerequisite.
install-docs:
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR)
	install -m 0644 docs/aeflow.1 $(DESTDIR)$(MANDIR)/man1/aeflow.1
	install -m 0644 contrib/aeflow.bash $(DESTDIR)$(BASHCOMPDIR)/aeflow

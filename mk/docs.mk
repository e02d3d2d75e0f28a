# Documentation: the man page and the bash/zsh completion (installed by
# `make install`, and by the rock), and `make docs`, the LDoc reference of the
# public modules in $(BUILD)/docs. spec/docs_spec.lua (in the suite) formats
# the man page with man-db and runs LDoc, and spec/rockspec_spec.lua checks
# the zsh completion with zsh -n, so their packages are the suite's.
DEB_PACKAGES += lua-ldoc man-db zsh

LDOC    ?= ldoc
MANDIR  ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions

.PHONY: docs install-docs

docs: deps-test
	$(LDOC) -q -d $(BUILD)/docs .
	@echo "docs: $(BUILD)/docs/index.html"

install-docs:
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0644 docs/aeflow.1 $(DESTDIR)$(MANDIR)/man1/aeflow.1
	install -m 0644 contrib/aeflow.bash $(DESTDIR)$(BASHCOMPDIR)/aeflow
	install -m 0644 contrib/_aeflow $(DESTDIR)$(ZSHCOMPDIR)/_aeflow

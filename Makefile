# Turnus -- development tasks
#
#   make test        install into .venv and run the whole test suite
#                    (SQLite; for PostgreSQL set TRYTOND_DATABASE_URI and
#                    DB_NAME, see tests/run_tests.py), with the browser
#                    tests in the web client (installs it first)
#   make demo        install, create/update the SQLite demo database
#                    "demo" (admin/admin in German, demo-en/demo1234 in
#                    English) with demo data, install the web client and
#                    serve it on http://localhost:8000/
#   make demo-db     the same without starting the servers
#   make demo-data   (re)load the demo data (idempotent)
#   make demo-stop   stop demo servers left over by a killed "make demo"
#   make demo-reset  delete the demo database and the mails it sent
#                    (var/mail; next "make demo" recreates it)
#   make clean       delete .venv and var/

SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
VENV_BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.turnus-installed
# npm version range of the web client (Tryton 8.0 LTS series)
SAO_VERSION ?= 8.0
SAO_DIR := var/sao/package
SAO_STAMP := var/sao/.installed
DEMO_DB ?= demo
TEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv soffice test sao demo demo-db demo-data demo-stop demo-reset clean

help:
	@sed -n '/^#/!q;s/^# \{0,1\}//p' Makefile

# The virtual environment with both modules installed in editable mode.
# Reinstalled when the distribution metadata changes.
$(VENV_STAMP): setup.cfg pyproject.toml
	test -x $(VENV_BIN)/python || $(PYTHON) -m venv $(VENV)
	$(VENV_BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV_STAMP)

# LibreOffice (soffice) converts the invoice PDFs
# (modules/recurring_invoice/invoice_pdf.py), python3-uno lets Debian's
# /usr/bin/python3 run the persistent converter of each trytond process
# (converter.py; without it one soffice start per batch converts):
# installed with apt as root, otherwise say what to install.
SOFFICE_PACKAGES := libreoffice-writer-nogui python3-uno
soffice:
	@{ command -v soffice >/dev/null \
		&& /usr/bin/python3 -c 'import uno' 2>/dev/null; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -q --no-install-recommends \
				$(SOFFICE_PACKAGES) \
			|| { apt-get update -q && apt-get install -y -q \
				--no-install-recommends $(SOFFICE_PACKAGES); }; \
		else \
			echo "soffice or python3-uno not found: install them, e.g." \
				"sudo apt-get install $(SOFFICE_PACKAGES)" >&2; \
		fi; }

# The browser tests (tests/test_browser.py) drive the web client, so it is
# installed first; without chromium they are skipped (CI=true: an error).
test: $(VENV_STAMP) $(SAO_STAMP) soffice
	$(VENV_BIN)/python tests/run_tests.py $(TEST_ARGS)

# The web client (sao): the npm package ships the built dist/, its
# runtime libraries come from npm install.
$(SAO_STAMP):
	rm -rf var/sao
	mkdir -p var/sao
	cd var/sao && tarball=$$(npm pack --silent 'tryton-sao@$(SAO_VERSION)') \
		&& tar -xzf "$$tarball" && rm -f "$$tarball"
	cd $(SAO_DIR) && npm install --omit=dev --legacy-peer-deps \
		--no-audit --no-fund --loglevel=error
	touch $@

sao: $(SAO_STAMP)

demo-db: $(VENV_STAMP) soffice
	DEMO_DB=$(DEMO_DB) VENV=$(VENV) scripts/demo.sh setup

demo-data: $(VENV_STAMP)
	DEMO_DB=$(DEMO_DB) VENV=$(VENV) scripts/demo.sh data

demo: $(VENV_STAMP) $(SAO_STAMP) soffice
	DEMO_DB=$(DEMO_DB) VENV=$(VENV) scripts/demo.sh setup serve

demo-stop:
	scripts/demo.sh stop

demo-reset: demo-stop
	rm -f var/db/$(DEMO_DB).sqlite var/db/$(DEMO_DB).sqlite-shm \
		var/db/$(DEMO_DB).sqlite-wal var/db/$(DEMO_DB).data-loaded
	rm -rf var/mail

clean:
	rm -rf $(VENV) var

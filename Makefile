# appserver: the two commands a newcomer needs are `make run` and `make test`.
# Both install what they need on a fresh Debian 12 machine (apt, then a venv from /usr/bin/python3).

SHELL := /bin/bash
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
BINARY := .build/release/appserver
# Builds for other CPythons (and Debian's debug interpreter): see python-hosts below.
HOSTS_BUILD := .build-pythons
HOSTS := $(HOSTS_BUILD)/hosts
APT_PACKAGES := python3-dev python3-venv libsystemd-dev pkg-config wrk curl systemd systemd-container debootstrap debhelper lintian rsync nginx-light libnginx-mod-stream openssl prometheus python3.11-dbg haproxy openssh-client iproute2
SWIFT_SOURCES := $(shell find Sources -type f) Package.swift
# Exclusivity is checked at compile time; the run-time checks (in SwiftNIO too) cost ~4% of a request.
SWIFT_RELEASE_FLAGS := -Xswiftc -enforce-exclusivity=unchecked

.PHONY: run test deps venv build unit glue e2e refleak-build refleak-test refleak-stress python-hosts python-versions-test systemd-tests fleet-test fuzz fuzz-smoke deb bench clean

## Serve the example app on http://127.0.0.1:8000/
run: deps venv build
	cd examples/hello && ../../$(BINARY) -c appserver.toml --virtualenv ../../$(VENV)

## Run every test: Swift unit tests, the Python glue's tests, a bounded fuzz run of the HTTP/1.1 parser, end-to-end tests
## against the release binary, the reference-leak test on Debian's debug interpreter, Flask and FastAPI on each
## other CPython 3.10-3.13 this machine has, then the systemd and .deb tests.
test: deps venv build unit glue fuzz-smoke e2e refleak-test python-versions-test systemd-tests

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The venv comes from Debian's python3 (the one the binary embeds), never another python on PATH.
venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt examples/hello/requirements.txt
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt -r examples/hello/requirements.txt
	touch $@

ifeq ($(PYTHON),)
build: $(BINARY)
else
## `make build PYTHON=/path/to/python3.X [PYTHON_LINK=shared]`: the server for another CPython (3.10 to 3.13),
## as .build-pythons/hosts/appserver-python3.X.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
$(if $(PYTHON_VERSION),,$(error PYTHON=$(PYTHON) does not run))
build: $(HOSTS)/appserver-python$(PYTHON_VERSION)
endif
$(BINARY): $(SWIFT_SOURCES)
	env -u PKG_CONFIG_PATH swift build -c release $(SWIFT_RELEASE_FLAGS)

# Builds for other interpreters share one build directory: SwiftNIO and the modules that do not see Python
# compile once, and switching interpreter recompiles only the Python host, the arbiter and the executable.
# appserver-python3.11d is Debian's debug interpreter (python3.11-dbg: Py_DEBUG, sys.gettotalrefcount).
PYTHON_LINK ?= static
OTHER_PYTHON_VERSIONS := 3.10 3.12 3.13
# A version's interpreter: PYTHON when it is that version, else pyenv's (this machine kind's), else the system's.
find_python = $(if $(filter $(1),$(PYTHON_VERSION)),$(PYTHON),$(firstword $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)) $(wildcard /usr/bin/python$(1))))
PRESENT_PYTHON_VERSIONS := $(foreach v,$(OTHER_PYTHON_VERSIONS),$(if $(call find_python,$(v)),$(v)))
$(HOSTS)/appserver-python%: $(SWIFT_SOURCES) scripts/python-build-env
	eval env $$(scripts/python-build-env $(call find_python,$*) $(if $(filter %d,$*),debug,$(PYTHON_LINK))) \
		swift build -c release $(SWIFT_RELEASE_FLAGS) --scratch-path $(HOSTS_BUILD) --product appserver-embedded
	install -D $(HOSTS_BUILD)/release/appserver-embedded $@
python-hosts: $(PRESENT_PYTHON_VERSIONS:%=$(HOSTS)/appserver-python%)

# A virtualenv of each such Python with the test apps' frameworks (Flask; FastAPI with uvloop).
.venv-python%/.installed: tests/pythons/requirements.txt
	rm -rf .venv-python$*
	$(call find_python,$*) -m venv .venv-python$*
	.venv-python$*/bin/pip install -q --disable-pip-version-check -r tests/pythons/requirements.txt
	touch $@

# The glue's own tests under each such Python too (the glue is Python that runs in the server's interpreter).
python-versions-test: python-hosts venv $(PRESENT_PYTHON_VERSIONS:%=.venv-python%/.installed)
	for v in $(PRESENT_PYTHON_VERSIONS); do echo "glue on $$v:"; .venv-python$$v/bin/python -m pytest -q -p no:cacheprovider tests/glue || exit 1; done
	APPSERVER_HOSTS=$(CURDIR)/$(HOSTS) APPSERVER_BIN=$(CURDIR)/$(BINARY) $(VENV_PYTHON) -m pytest -q -rs tests/pythons

unit:
	env -u PKG_CONFIG_PATH swift test

# The server's Python glue (Sources/AppServerPython/Glue/*.py) as Python, and the bridge's ownership rules.
glue: venv
	$(VENV_PYTHON) -m pytest -q tests/glue

e2e: build venv
	APPSERVER_BIN=$(CURDIR)/$(BINARY) $(VENV_PYTHON) -m pytest -q tests/e2e

# The HTTP/1.1 request parser under libFuzzer (with AddressSanitizer): the parser's three files (its
# byte-word checks are ByteWords.swift, the names it notes fields for WatchedFieldNames.swift) and the
# target in fuzz/, compiled alone in seconds. `make test` runs it for FUZZ_SECONDS; `make fuzz` for longer.
FUZZER := .build-fuzz/http1-parser-fuzz
FUZZ_SECONDS ?= 60
FUZZ_LONG_SECONDS ?= 1800
$(FUZZER): Sources/AppServerHTTP/HTTP1/HTTP1Parser.swift Sources/AppServerHTTP/HTTP1/ByteWords.swift \
		Sources/AppServerHTTP/HTTP1/WatchedFieldNames.swift fuzz/HTTP1ParserFuzz.swift
	mkdir -p .build-fuzz
	swiftc -O -sanitize=fuzzer,address -parse-as-library $^ -o $@ 2>&1 | grep -v "Cannot export local symbol" || true
	test -x $@

fuzz-smoke: $(FUZZER)
	rm -rf .build-fuzz/smoke && cp -r fuzz/corpus .build-fuzz/smoke
	SWIFT_BACKTRACE=enable=no $(FUZZER) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 -artifact_prefix=.build-fuzz/ .build-fuzz/smoke 2>&1 \
		| grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)|ERROR|Fatal error|precondition|artifact" ; test $${PIPESTATUS[0]} -eq 0

fuzz: $(FUZZER)
	mkdir -p .build-fuzz/corpus && cp -n fuzz/corpus/* .build-fuzz/corpus/
	SWIFT_BACKTRACE=enable=no $(FUZZER) -max_total_time=$(FUZZ_LONG_SECONDS) -max_len=16384 -print_final_stats=1 -artifact_prefix=.build-fuzz/ .build-fuzz/corpus

# The reference-leak test: the Python bridge leaks no reference per request, on Debian's debug interpreter.
DEBUG_BINARY := $(HOSTS)/appserver-python3.11d
refleak-build: $(DEBUG_BINARY)

refleak-test: refleak-build venv
	APPSERVER_DEBUG_BIN=$(CURDIR)/$(DEBUG_BINARY) $(VENV_PYTHON) -m pytest -q tests/refleak

# The refleak rounds in several servers at once for a while (not in `make test`): faults that show once in
# many runs, such as a reference released twice under --threads, show here.
REFLEAK_STRESS_ARGS ?= --servers 6 --seconds 60
refleak-stress: refleak-build venv
	APPSERVER_DEBUG_BIN=$(CURDIR)/$(DEBUG_BINARY) $(VENV_PYTHON) tests/refleak/stress.py $(REFLEAK_STRESS_ARGS)
	APPSERVER_DEBUG_BIN=$(CURDIR)/$(DEBUG_BINARY) $(VENV_PYTHON) tests/refleak/stress.py $(REFLEAK_STRESS_ARGS) --asgi

# The units under a real systemd 252 booted in systemd-nspawn (the Debian root is cached in rootfs-cache/).
systemd-tests: build venv python-hosts
	APPSERVER_BIN=$(CURDIR)/$(BINARY) APPSERVER_HOSTS=$(CURDIR)/$(HOSTS) $(VENV_PYTHON) -m pytest -q -rs tests/systemd

# Only the fleet test (three hosts behind HAProxy and nginx, upgraded by deploy/ansible); systemd-tests runs it too.
fleet-test: deps venv
	$(VENV_PYTHON) -m pytest -q -rs tests/systemd/test_fleet.py

## Build dist/appserver_VERSION_amd64.deb (VERSION from packaging/debian/changelog; `make deb VERSION=1.2.3` for another).
deb: deps
	packaging/build-deb.sh $(VERSION)

bench: deps build
	bench/run.sh

clean:
	rm -rf .build .build-deb .build-fuzz $(HOSTS_BUILD) dist $(VENV) .venv-python*

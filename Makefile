# appserver: the two commands a newcomer needs are `make run` and `make test`.
# Both install what they need on a fresh Debian 12 machine (apt, then a venv from /usr/bin/python3).

SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BINARY := .build/release/appserver
APT_PACKAGES := python3-dev python3-venv libsystemd-dev pkg-config wrk curl systemd systemd-container debootstrap debhelper lintian rsync nginx-light libnginx-mod-stream openssl prometheus python3.11-dbg
SWIFT_SOURCES := $(shell find Sources -type f) Package.swift
# Exclusivity is checked at compile time; the run-time checks (in SwiftNIO too) cost ~4% of a request.
SWIFT_RELEASE_FLAGS := -Xswiftc -enforce-exclusivity=unchecked

.PHONY: run test deps venv build unit glue e2e refleak-build refleak-test systemd-tests fuzz fuzz-smoke deb bench clean

## Serve the example app on http://127.0.0.1:8000/
run: deps venv build
	cd examples/hello && ../../$(BINARY) -c appserver.toml --virtualenv ../../$(VENV)

## Run every test: Swift unit tests, the Python glue's tests, a bounded fuzz run of the HTTP/1.1 parser, end-to-end tests
## against the release binary, the reference-leak test on Debian's debug interpreter, then the systemd and .deb tests.
test: deps venv build unit glue fuzz-smoke e2e refleak-test systemd-tests

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

build: $(BINARY)
$(BINARY): $(SWIFT_SOURCES)
	env -u PKG_CONFIG_PATH swift build -c release $(SWIFT_RELEASE_FLAGS)

unit:
	env -u PKG_CONFIG_PATH swift test

# The server's Python glue (Sources/AppServerPython/Glue/*.py) as Python, and the bridge's ownership rules.
glue: venv
	$(PYTHON) -m pytest -q tests/glue

e2e: build venv
	APPSERVER_BIN=$(CURDIR)/$(BINARY) $(PYTHON) -m pytest -q tests/e2e

# The HTTP/1.1 request parser under libFuzzer (with AddressSanitizer): the parser's one file and the
# target in fuzz/, compiled alone in seconds. `make test` runs it for FUZZ_SECONDS; `make fuzz` for longer.
FUZZER := .build-fuzz/http1-parser-fuzz
FUZZ_SECONDS ?= 60
FUZZ_LONG_SECONDS ?= 1800
$(FUZZER): Sources/AppServerHTTP/HTTP1/HTTP1Parser.swift fuzz/HTTP1ParserFuzz.swift
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

# The server built against Debian's debug interpreter (python3.11-dbg: Py_DEBUG, sys.gettotalrefcount), in a
# build directory of its own, and the test that the Python bridge leaks no reference per request.
DEBUG_BINARY := .build-pydebug/release/appserver
refleak-build: $(DEBUG_BINARY)
$(DEBUG_BINARY): $(SWIFT_SOURCES)
	APPSERVER_PYTHON_LINK=debug env -u PKG_CONFIG_PATH swift build -c release $(SWIFT_RELEASE_FLAGS) --scratch-path .build-pydebug

refleak-test: refleak-build venv
	APPSERVER_DEBUG_BIN=$(CURDIR)/$(DEBUG_BINARY) $(PYTHON) -m pytest -q tests/refleak

# The units under a real systemd 252 booted in systemd-nspawn (the Debian root is cached in rootfs-cache/).
systemd-tests: build venv
	APPSERVER_BIN=$(CURDIR)/$(BINARY) $(PYTHON) -m pytest -q tests/systemd

## Build dist/appserver_VERSION_amd64.deb (VERSION from packaging/debian/changelog; `make deb VERSION=1.2.3` for another).
deb: deps
	packaging/build-deb.sh $(VERSION)

bench: deps build
	bench/run.sh

clean:
	rm -rf .build .build-deb .build-fuzz .build-pydebug dist $(VENV)

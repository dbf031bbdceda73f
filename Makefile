# nearcache — the two commands:
#   make run    install what is missing, build, start nearcached (foreground, default config)
#   make test   install what is missing, build, run every test (C++ and Python)
# Everything else here is opt-in.

BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
PYTHON     ?= python3
VENV       ?= .venv
PYTEST_ARGS ?=

.PHONY: run test deps build venv test-cpp test-python stress fuzz fuzz-ci asan tsan bench package clean

run: deps build
	@$(BUILD)/daemon/nearcached --print-socket-banner

test: deps build venv
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	NEARCACHE_BUILD=$(BUILD) $(VENV)/bin/python -m pytest -q tests $(PYTEST_ARGS)

deps:
	@scripts/install-deps.sh build test

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

venv: build
	@scripts/setup-venv.sh $(VENV) $(PYTHON)

test-cpp: deps build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-python: deps build venv
	NEARCACHE_BUILD=$(BUILD) $(VENV)/bin/python -m pytest -q tests $(PYTEST_ARGS)

# 10^8 verified reads in the torn-read stress (minutes).
stress: deps build
	NEARCACHE_STRESS_READS=100000000 $(BUILD)/tests/shm/test_shm_stress

# Sanitizer builds, in their own build trees.
asan:
	@scripts/install-deps.sh build test sanitize
	@CC=clang-14 CXX=clang++-14 cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug \
	  -DNEARCACHE_SANITIZE=address,undefined -DNEARCACHE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j$(JOBS)

tsan:
	@scripts/install-deps.sh build test sanitize
	@CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DNEARCACHE_SANITIZE=thread -DNEARCACHE_BUILD_BENCH=OFF -DNEARCACHE_BUILD_DAEMON=OFF >/dev/null
	@cmake --build build-tsan -j$(JOBS) --target test_shm_stress
	TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/shm/test_shm_stress "[threads]"

# libFuzzer targets; FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 300
fuzz:
	@scripts/install-deps.sh build sanitize
	@CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DNEARCACHE_FUZZ=ON -DNEARCACHE_SANITIZE=address,undefined -DNEARCACHE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j$(JOBS) --target fuzz_targets
	scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=20

bench: deps build venv
	@scripts/install-deps.sh bench
	@[ ! -f bench/requirements.txt ] || $(VENV)/bin/python -m pip install -q -r bench/requirements.txt
	BUILD=$(BUILD) VENV=$(VENV) bench/run-all.sh

# dist/: the Debian package (lintian-checked), the Python client's wheel and sdist.
package:
	@scripts/install-deps.sh build package
	scripts/build-package.sh

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz

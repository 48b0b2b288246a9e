# fnmesh - two commands do everything:
#   make run    install missing packages, build, start a node on 127.0.0.1:8080
#               with examples/ deployed
#   make test   install, build (plain and sanitizer builds), run every test
.PHONY: all build run test test-fast test-asan deps clean bench

MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
LISTEN ?= 127.0.0.1:8080
DATA ?= ./fnmesh-data

all: build

deps:
	@./scripts/deps.sh test

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j$(JOBS)

build-asan/fnmesh: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFM_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(JOBS)

run: build
	@./scripts/run-node.sh build/fnmesh $(LISTEN) $(DATA)

test-fast: build
	@cd build && ctest --output-on-failure -j1

test-asan: build-asan/fnmesh
	@cd build-asan && ASAN_OPTIONS=$$(cat ../tests/asan.options) \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j1

test: build
	@cd build && ctest --output-on-failure -j1
	@$(MAKE) --no-print-directory test-asan

bench: build
	@./scripts/deps.sh bench
	@./bench/merge.sh

clean:
	rm -rf build build-asan

# dadi: `make deps`, `make` (Release build), `make test`, `make demo`, `make bench`, `make fuzz`.
# Build trees live in build/ (Release), build-asan/ (ASan+UBSan), build-fuzz/ (clang+libFuzzer).
# ccache keeps rebuilds cheap; its cache and everything tests download live under /var/cache/dadi.

CACHE_DIR ?= /var/cache/dadi
export CCACHE_DIR ?= $(CACHE_DIR)/ccache
# Paths relative to the checkout and no working directory in the hash, so that a fresh clone in
# another directory (CI) and every build tree share one cache.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := true
export CCACHE_MAXSIZE ?= 10G
export DADI_CACHE_DIR ?= $(CACHE_DIR)
JOBS ?= $(shell nproc)
CMAKE_COMMON = -G Ninja -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
# Which containerd the integration tests and the demo use: 1.6, 1.7, 2.1 or all.
CONTAINERD ?= all

.PHONY: all build deps build-asan build-fuzz test unit-test asan-test fuzz-test integration-test \
        demo bench fuzz format clean

all: build

deps:
	./deps/install

build:
	cmake -S . -B build $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Release
	cmake --build build -j $(JOBS)

build-asan:
	cmake -S . -B build-asan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug -DDADI_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)

build-fuzz:
	cmake -S . -B build-fuzz $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDADI_FUZZ=ON \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
	cmake --build build-fuzz -j $(JOBS)

# The whole suite: unit tests, the same under ASan+UBSan, fuzz targets on their corpora for a
# bounded time, then the end-to-end tests against real containerd and registry. The last line
# is the summary "N passed, M failed".
test: deps build build-asan build-fuzz
	./tests/run-all --containerd $(CONTAINERD)

unit-test: build
	ctest --test-dir build --output-on-failure -j $(JOBS)

asan-test: build-asan
	ctest --test-dir build-asan --output-on-failure -j $(JOBS)

fuzz-test: build-fuzz
	./tests/fuzz/run build-fuzz 20

fuzz: build-fuzz
	./tests/fuzz/run build-fuzz 600

integration-test: build
	./integration/run-tests --containerd $(CONTAINERD)

demo: deps build
	./integration/demo

bench: build
	./integration/bench/run-all

format:
	git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf build build-asan build-fuzz

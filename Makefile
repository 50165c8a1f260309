# KalamDB GraphQL. `make run` and `make test` install what is missing first.
SHELL := /bin/bash
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release/kalamdb
KALAMDB_ROOT_PASSWORD ?= kalamdb-root
export KALAMDB_ROOT_PASSWORD

.PHONY: run test bench deps test-deps build release lint playground fuzz soak

deps:
	@bash scripts/install-deps.sh

test-deps:
	@bash scripts/install-deps.sh --for-tests

# Everything, as the tests use it: the `tests` crate turns on the engine's test-only
# `faults` feature, and Cargo builds the workspace's binary with it.
build: deps
	cargo build --release --workspace --bins

# The server alone, without the test-only features: the binary to run and ship.
release: deps
	cargo build --release -p kalamdb-api --bin kalamdb

run: release
	@echo "root password at first start: $$KALAMDB_ROOT_PASSWORD (set KALAMDB_ROOT_PASSWORD to choose another)"
	$(BIN) serve --demo

test: build test-deps
	KALAMDB_BIN=$(BIN) bash scripts/test.sh

# The fuzzers of the SQL entry and of GraphQL requests, FUZZ_SECS seconds each (a few
# seconds in `make test`); FUZZ_SEED repeats a run, FUZZ_TRACE=1 prints each input.
FUZZ_SECS ?= 600
fuzz: build
	FUZZ_SECS=$(FUZZ_SECS) cargo test --release --workspace --lib fuzz_ -- --nocapture

# The soak test (tests/examples/soak.rs): SOAK_SECS seconds (default 600) of writers,
# readers, subscribers (slow ones too), flushes, compactions and SIGKILL restarts, then
# a check of every acknowledged write and change-feed event and the server's RSS.
SOAK_SECS ?= 600
soak: build
	cargo build --release --workspace --examples
	SOAK_SECS=$(SOAK_SECS) KALAMDB_BIN=$(BIN) $(CARGO_TARGET_DIR)/release/examples/soak

bench: build
	cargo bench --profile release --workspace --bench engine --bench cold --bench load --bench ws_load

lint: deps
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

# Rebuilds the playground bundle that the binary embeds; commit web-playground/dist and
# web-playground/dist.sha256 with the sources.
playground: test-deps
	cd web-playground && npm ci --no-audit --no-fund --loglevel=error && npm run build

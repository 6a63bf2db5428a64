# Orderly: one Makefile for every module of the workspace (see go.work).
#
#   make run             build the services and start the local stack (devrun)
#   make test            gofmt, vet, generated-code check, all tests, chaos tests
#   make lint            gofmt, vet and golangci-lint on every module
#   make generate        regenerate protobuf code
#   make check-generate  fail when committed generated code is stale
#   make bench           run benchmarks
#   make bench-ws        live tracking benchmark: 19,000 WebSockets on one notification replica (minutes)
#   make bench-e2e       end-to-end load benchmark: shoppers' orders at rising rates through all four services (minutes)
#   make bench-overload  end-to-end overload: twice a sustainable rate for a minute, then recovery (minutes)
#   make bench-history   end-to-end rate on fresh databases, then with months of history preloaded (minutes)
#   make bench-soak      end-to-end soak: half a sustainable rate for ten minutes, growth over time (minutes)
#   make fuzz            every Fuzz target of every module for FUZZTIME each (default 30s)
#   make compose-test    build the images locally, run docker-compose.yml on this machine and its end-to-end suite (root; minutes)
#   make chaos           faults under load, full size: every tests/faults scenario over two replicas of everything, then the invariant checker (minutes)
#   make vendor-apidocs  re-fetch the pinned Swagger UI that /docs embeds, checking its npm integrity
#   make tools           install the development tools (protoc, golangci-lint)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Go may not be on PATH on a fresh machine; it lives in /usr/local/go there.
# $(shell) does not see exported variables in make < 4.4, so the Go binary is
# resolved to a full path here, and PATH is extended for recipes.
GO := $(or $(shell command -v go 2>/dev/null),/usr/local/go/bin/go)
GOROOT := $(shell $(GO) env GOROOT)
GOFMT := $(GOROOT)/bin/gofmt
export PATH := $(GOROOT)/bin:$(PATH)

TOOLS_BIN := $(CURDIR)/.tools/bin
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(TOOLS_BIN)/golangci-lint

# Every services/<name>/cmd/<name>: adding a service needs no edit here.
SERVICES := $(patsubst services/%/cmd,%,$(wildcard services/*/cmd))
# The operators' tools (orderly-dlq, orderly-token): every pkg/cmd/<name>
# with a main.go (pkg/cmd/internal is what they share).
TOOLS := $(patsubst %/main.go,%,$(wildcard pkg/cmd/*/main.go))

# VERSION is what every binary reports as service.version and on
# orderly_build_info (pkg/telemetry): the nearest tag, the commits since and
# the commit, -dirty with local changes; REVISION is the whole commit. In a
# workspace the go command records neither, so without them (go run) a
# binary says "unknown".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/orderly/orderly/pkg/telemetry.version=$(VERSION) -X github.com/orderly/orderly/pkg/telemetry.revision=$(REVISION)

TEST_TIMEOUT ?= 12m
# compose-test's bound, a cold machine included (9 min measured here, 13 on a
# loaded one, docs/deploy.md), so that .ci/run stays under 40 minutes; on
# timeout the script still tears the stack down.
COMPOSE_TEST_TIMEOUT ?= 20m
CHAOS_TIMEOUT ?= 20m
BENCH ?= .
BENCHTIME ?= 1s
BENCH_PKGS ?= ./pkg/... ./tests/...

.PHONY: compose-test
## compose-test: deploy/local/compose-test: install Debian's docker.io, start
## dockerd, build every image locally (no registry), bring docker-compose.yml
## up on the host network with free ports, run tests/compose against it and
## tear it down (ADR 0018). Fails, saying why, where Docker cannot run.
compose-test:
	timeout --kill-after=60s $(COMPOSE_TEST_TIMEOUT) deploy/local/compose-test

.PHONY: help run build test chromium fmt fmt-check vet lint golangci-lint generate check-generate bench tools fuzz

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

## run: build the four services, devrun and the tools into ./bin, then run the local stack
## in the foreground (devrun creates databases, migrates, seeds, starts the
## services and stops them on Ctrl-C/SIGTERM). ORDERLY_BIN_DIR tells it where
## the binaries are.
run: build
	ORDERLY_BIN_DIR=$(CURDIR)/bin exec ./bin/devrun

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ $(foreach s,$(SERVICES),./services/$(s)/cmd/$(s)) ./tests/cmd/devrun $(addprefix ./,$(TOOLS))

## test: every check and every test, against the real Postgres and RabbitMQ.
## Chaos tests (TestChaos*, they stop the broker) skip unless ORDERLY_CHAOS=1,
## so they run in their own serialized step (-p 1), never next to other
## packages' tests. They run first so that the closing lines of the output are
## the main suite's summary. Both steps use -race so they share one build.
test: fmt-check vet check-generate chromium
	ORDERLY_CHAOS=1 $(GO) test work -count=1 -race -p 1 -run 'Chaos' -timeout $(CHAOS_TIMEOUT)
	env -u ORDERLY_CHAOS $(GO) test work -count=1 -race -timeout $(TEST_TIMEOUT)

## chromium: the browser tests drive Debian's Chromium; install it when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "chromium not found; installing it with apt-get"; \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }

# Every .go file outside vendor/, testdata/ and hidden directories.
GO_FILES_CMD := find . \( -name vendor -o -name testdata -o \( -name '.?*' -type d \) \) -prune -o -name '*.go' -type f -print

fmt:
	$(GO_FILES_CMD) | xargs -r $(GOFMT) -w

fmt-check:
	@out=$$($(GO_FILES_CMD) | xargs -r $(GOFMT) -l); \
	if [ -n "$$out" ]; then echo "gofmt needed (run 'make fmt'):"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet work

## lint: golangci-lint runs per module, so loop over the workspace's modules
## and report every failing one.
lint: fmt-check vet golangci-lint
	@failed=; \
	for m in $$($(GO) list -m -f '{{.Dir}}'); do \
		rel=$${m#$(CURDIR)/}; \
		if [ -z "$$(cd "$$m" && $(GO) list ./... 2>/dev/null)" ]; then echo "== $$rel: no packages, skipped"; continue; fi; \
		echo "== $$rel"; \
		(cd "$$m" && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...) || failed="$$failed $$rel"; \
	done; \
	if [ -n "$$failed" ]; then echo "lint failed in:$$failed"; exit 1; fi

# Installs the pinned golangci-lint into .tools/bin unless that exact version
# is already there.
golangci-lint:
	@$(GOLANGCI_LINT) version 2>/dev/null | grep -q 'version $(GOLANGCI_LINT_VERSION:v%=%) ' || { \
		echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $(TOOLS_BIN)"; \
		GOBIN=$(TOOLS_BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); }

generate:
	proto/generate.sh

check-generate:
	proto/generate.sh --check

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem $(BENCH_PKGS)

## bench-ws: memory per idle WebSocket and delivery latency of one real
## notification replica (tests/cmd/wsbench; settings in its package doc).
## Not part of `make test`: it holds 19,000 connections for several minutes.
.PHONY: bench-ws
bench-ws:
	cd tests && ORDERLY_BENCH_WS=1 $(GO) test -v -count=1 -timeout 30m -run '^TestLiveTracking$$' ./cmd/wsbench/

## bench-e2e: the whole system under shoppers' load (tests/e2ebench, with the
## open-loop generator of tests/loadgen): a ladder of offered rates, each
## reported as achieved rate, placed→confirmed latency, errors, and CPU,
## transactions and messages per order; rewrites the bench-e2e section of
## docs/benchmarks.md. Settings (ORDERLY_E2E_RATES, ORDERLY_E2E_DURATION, …)
## in its package doc. Not part of `make test`: it loads the whole machine
## for 5–20 minutes, so run it on an otherwise idle machine.
.PHONY: bench-e2e
bench-e2e:
	cd tests && ORDERLY_BENCH_E2E=1 ORDERLY_E2E_WRITE_DOCS=1 $(GO) test -v -count=1 -timeout 90m -run '^TestEndToEnd$$' ./e2ebench/

## bench-overload: the end-to-end stack past saturation (tests/e2ebench,
## TestOverload): ORDERLY_OVERLOAD_RATE (400/s) for ORDERLY_OVERLOAD_DURATION
## (60s), then ORDERLY_RECOVERY_RATE (60/s) for ORDERLY_RECOVERY_DURATION
## (60s); a timeline of 201s, 503s, latencies, RSS and goroutines, the time
## back to normal latency, and checks that every order taken ended and every
## 503 carried Retry-After. Rewrites the bench-overload section of
## docs/benchmarks.md. Not part of `make test`: about 5 minutes of the whole
## machine, so run it on an otherwise idle machine.
.PHONY: bench-overload
bench-overload:
	cd tests && ORDERLY_BENCH_OVERLOAD=1 ORDERLY_E2E_WRITE_DOCS=1 $(GO) test -v -count=1 -timeout 30m -run '^TestOverload$$' ./e2ebench/

## bench-history: one offered rate (ORDERLY_HISTORY_RATE, 180/s, for
## ORDERLY_E2E_DURATION) on fresh databases, then again after preloading what
## months of traffic leave (1,000,000 sent outbox events, 1,000,000 inbox
## records, 100,000 finished orders; ORDERLY_HISTORY_SCALE scales them), with
## table sizes before and after (tests/e2ebench, TestHistory). Rewrites the
## bench-history section of docs/benchmarks.md. Not part of `make test`:
## 5–15 minutes of the whole machine and a few GB of database.
.PHONY: bench-history
bench-history:
	cd tests && ORDERLY_BENCH_HISTORY=1 ORDERLY_E2E_WRITE_DOCS=1 $(GO) test -v -count=1 -timeout 60m -run '^TestHistory$$' ./e2ebench/

## bench-soak: ORDERLY_SOAK_RATE (100/s) for ORDERLY_SOAK_DURATION (10m),
## sampled every ORDERLY_SOAK_SAMPLE (30s): latency, CPU per order, RSS,
## goroutines and table sizes over time, with the slope of each
## (tests/e2ebench, TestSoak). Rewrites the bench-soak section of
## docs/benchmarks.md. Not part of `make test`: the whole machine for
## 10 minutes and more.
.PHONY: bench-soak
bench-soak:
	cd tests && ORDERLY_BENCH_SOAK=1 ORDERLY_E2E_WRITE_DOCS=1 $(GO) test -v -count=1 -timeout 90m -run '^TestSoak$$' ./e2ebench/

## fuzz: each Fuzz* target of every module of the workspace, found by grep
## so a new one is not skipped, for FUZZTIME. `make test` runs their seeds
## and testdata/fuzz as plain tests.
FUZZTIME ?= 30s
fuzz:
	@for m in $$($(GO) list -m -f '{{.Dir}}'); do \
		cd "$$m"; \
		for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
			for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2); do \
				echo "== $${m#$(CURDIR)/}/$${dir#./} $$target"; \
				$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$dir || exit 1; \
			done; \
		done; \
	done

## chaos: every scenario of tests/faults at full size (at least 1,000
## orders at 50/s over two replicas of every service, each): no fault,
## SIGKILLs, a rolling restart, the broker stopped and its connections
## closed, PostgreSQL restarted in immediate mode, network faults through
## toxiproxy, scaling in and out. After each the invariant checker
## (tests/invariants) prints one line per invariant. `make test` runs them
## smaller in its chaos step. ORDERLY_CHAOS_SEED replays a run's faults;
## ORDERLY_CHAOS_ORDERS, _RATE and _KILLS resize it; CHAOS_RUN picks
## scenarios (a -run pattern).
CHAOS_RUN ?= ^TestChaos
.PHONY: chaos
chaos:
	cd tests && ORDERLY_CHAOS=1 ORDERLY_CHAOS_FULL=1 $(GO) test -v -count=1 -timeout 90m -run '$(CHAOS_RUN)' ./faults/

## vendor-apidocs: re-fetch the Swagger UI files /docs embeds (pkg/apidocs/swagger-ui)
## from the npm registry, at the version and integrity pinned in
## pkg/apidocs/vendor.sh; it fails when the tarball matches neither.
.PHONY: vendor-apidocs
vendor-apidocs:
	pkg/apidocs/vendor.sh

## tools: protoc (apt, if missing), the pinned protoc-gen-go, golangci-lint.
tools: golangci-lint
	@command -v protoc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; }
	cd proto && $(GO) tool -n protoc-gen-go >/dev/null
	@protoc --version; cd proto && $(GO) tool protoc-gen-go --version; $(GOLANGCI_LINT) version

# mqspool build and test targets. "make help" lists them.

GO        ?= go
BIN       ?= bin/mqspool
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 30s
SOAK_DURATION ?= 10m
POWERLOSS_CYCLES ?= 8

.PHONY: help build test test-short test-large test-powerloss soak vet fmt cover fuzz cross demo check clean deps bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/mqspool
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mqspool

deps: ## install mosquitto from Debian when missing (needs root)
	@command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients; }

test: deps ## run every test with the race detector, integration tests included
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## run the unit tests only (no broker needed)
	$(GO) test -race -count=1 -short ./...

test-large: deps ## start on a million queued messages under a 128 MiB memory cgroup (root; minutes, about 2 GB of disk)
	MQSPOOL_LARGE_TESTS=1 $(GO) test -count=1 -timeout 60m -run '^TestLarge' -v ./test/

soak: deps ## forward messages through random faults for SOAK_DURATION (default 10m), without the race detector; never in CI
	MQSPOOL_SOAK=$(SOAK_DURATION) $(GO) test -count=1 -timeout 0 -run '^TestSoak_' -v ./test/

test-powerloss: deps ## cut the power POWERLOSS_CYCLES times (default 8) under the daemon on a FUSE file system that loses unsynced writes (root and /dev/fuse; POWERLOSS_SEED replays the run lengths)
	POWERLOSS_REQUIRED=1 $(GO) test -race -count=1 ./test/harness/lossfs/
	POWERLOSS_REQUIRED=1 POWERLOSS_CYCLES=$(POWERLOSS_CYCLES) POWERLOSS_SEED=$(POWERLOSS_SEED) \
		$(GO) test -race -count=1 -timeout 30m -run '^TestPowerLoss' -v ./test/

vet: ## go vet
	$(GO) vet ./...

fmt: ## check formatting
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

cover: ## test coverage report in cover.html
	$(GO) test -count=1 -coverprofile=cover.out ./...
	$(GO) tool cover -html=cover.out -o cover.html

fuzz: ## run every fuzz test for FUZZTIME each (default 30s)
	@scripts/fuzz.sh $(FUZZTIME)

cross: ## build for the edge targets: linux arm64 and armv7
	GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./cmd/mqspool
	GOOS=linux GOARCH=arm GOARM=7 $(GO) build -o /dev/null ./cmd/mqspool

demo: deps build ## run mqspool end to end against a local mosquitto
	scripts/demo.sh $(BIN)

check: fmt vet cross test ## everything CI runs

bench: deps ## measure against mosquitto_pub and Go clients into docs/benchmarks.md (minutes; BENCH_SCALE=small for a quick check)
	@command -v perf >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y linux-perf; }
	cd bench && BENCH_SCALE=$(or $(BENCH_SCALE),full) $(GO) run . -out ../docs/benchmarks.md

clean: ## remove build output
	rm -rf bin cover.out cover.html

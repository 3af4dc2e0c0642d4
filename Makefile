# ckpt: build, set up the real components, test, demo, benchmark.
SHELL   := /bin/bash
GO      ?= go
BIN     := bin
PKGS    := ./...
# Integration tests restore processes at their original pids and share
# runc, containerd and iptables state: one package at a time.
INTEGRATION := ./integration/...
# The second containerd of the matrix (scripts/setup-clients.sh): the
# Go client, ctr, CRI, Docker and nerdctl suites run again on it.
CONTAINERD_2_4 ?= /opt/ckpt-containerd/v2.4.2/bin/containerd
INTEGRATION_2_4 := ./integration/containerd/ ./integration/cri/ ./integration/docker/ ./integration/nerdctl/

.PHONY: all build setup test test-in-container unit integration demo demo-migrate bench lint clean install

all: build

build:
	$(GO) build -o $(BIN)/ckpt ./cmd/ckpt
	@if [ -d cmd/containerd-shim-ckpt-v2 ]; then $(GO) build -o $(BIN)/containerd-shim-ckpt-v2 ./cmd/containerd-shim-ckpt-v2; fi

# Installs CRIU, runc and containerd (idempotent; needs root).
setup:
	bash scripts/setup.sh

install: build
	install -m 0755 $(BIN)/ckpt /usr/local/bin/ckpt
	@if [ -x $(BIN)/containerd-shim-ckpt-v2 ]; then install -m 0755 $(BIN)/containerd-shim-ckpt-v2 /usr/local/bin/; fi

unit:
	$(GO) test -race -count=1 $$($(GO) list $(PKGS) | grep -v /integration/)
	cd bench && $(GO) test -race -count=1 ./...

integration: build
	$(GO) test -count=1 -p 1 -timeout 30m -v $(INTEGRATION) 2>&1 | tee /tmp/ckpt-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go'; exit $${PIPESTATUS[0]}
	CKPT_CONTAINERD_BIN=$(CONTAINERD_2_4) $(GO) test -count=1 -p 1 -timeout 30m -v $(INTEGRATION_2_4) 2>&1 | tee /tmp/ckpt-integration-2.4.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go'; exit $${PIPESTATUS[0]}

test: lint unit integration

# The same suite inside a privileged container (docs/containerized-ci.md).
test-in-container:
	bash scripts/test-in-container.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...
	cd bench && $(GO) vet ./... && staticcheck ./...

# bench is a module of its own (bench/go.mod): its chart library stays out
# of the product's dependencies.
bench: build
	cd bench && $(GO) run . -out ../results

# Only the live migration between two containerds (docs/benchmark.md,
# "Live migration"); BENCH_FLAGS="-migrate-sizes 64 -migrate-reps 1" for a short one.
.PHONY: bench-migrate
bench-migrate: build
	cd bench && $(GO) run . -migrate-only $(BENCH_FLAGS) -out ../results

# Shim memory (PSS) of 10 idle pods of 3 containers, ckpt's against runc's (docs/pods.md).
.PHONY: bench-pods
bench-pods: build
	cd bench && $(GO) run . -pods 10 -out ../results

# 1,000 checkpoint/restore cycles through the shim with containerd's
# client and 100 through `docker checkpoint`, printing failures and growth
# (docs/soak.md); SOAK_FLAGS="-cycles 300" SOAK_DOCKER_CYCLES=20 for less.
SOAK_DOCKER_CYCLES ?= 100
.PHONY: soak
soak:
	$(GO) run ./integration/soak/cmd $(SOAK_FLAGS)
	CKPT_SOAK_DOCKER_CYCLES=$(SOAK_DOCKER_CYCLES) $(GO) test -count=1 -v -timeout 30m -run 'TestDockerSoak$$' ./integration/docker/

demo: build
	bash scripts/demo.sh

# ckpt migrate between two "hosts" (netns, mount and cgroup namespaces): post-copy, then --copy back.
demo-migrate: build
	bash scripts/demo-migrate.sh

clean:
	rm -rf $(BIN)

# tokenbroker — read top to bottom: build, run, test, bench, lint.
GO      ?= go
BIN     ?= bin
# The version is the git tag without its "v" (tag v0.1.0 → 0.1.0, the Helm
# chart's appVersion and the image tag); between tags, git describe's form.
VERSION ?= $(patsubst v%,%,$(shell git describe --tags --always --dirty 2>/dev/null || echo dev))
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
FUZZTIME ?= 15s

.PHONY: all build run test test-deps unit fuzz bench lint image release clean

all: build

## build: the tokenbroker and devidp binaries in ./bin
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenbroker ./cmd/tokenbroker
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/devidp ./cmd/devidp

## run: start the dev IdP and tokenbroker on the quickstart config and show a Check getting a token
run: build
	BIN=$(BIN) examples/quickstart/run.sh

## test: install what the tests need, then every test under -race, then short fuzz runs
test: test-deps unit fuzz

test-deps:
	.ci/install-deps

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Allocations' ./envoy/   # allocation budgets: -race changes the counts

## fuzz: each fuzz target for $(FUZZTIME) (seed corpora live in testdata/fuzz)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/
	$(GO) test -run '^$$' -fuzz '^FuzzParseTokenResponse$$' -fuzztime $(FUZZTIME) ./credential/
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./envoy/
	$(GO) test -run '^$$' -fuzz '^FuzzHTTPRequest$$' -fuzztime $(FUZZTIME) ./envoy/
	$(GO) test -run '^$$' -fuzz '^FuzzDifferential$$' -fuzztime $(FUZZTIME) ./envoy/
	$(GO) test -run '^$$' -fuzz '^FuzzCanonical$$' -fuzztime $(FUZZTIME) ./internal/canonpath/

## bench: Go benchmarks with allocations, the memory of 100k cached credentials, then
## tokenbroker vs a bare ext_authz server under the same ghz load (paired rounds; see BENCHMARKS.md)
BENCHFLAGS ?= -rounds 6 -duration 5s -concurrency 16
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) build -o bin/tokenbroker-bench ./cmd/tokenbroker
	-$(GO) run ./bench/rss -bin bin/tokenbroker-bench -n 100000 -token-bytes 64
	-$(GO) run ./bench/rss -bin bin/tokenbroker-bench -n 100000 -token-bytes 1024
	bench/install-ghz.sh
	$(GO) run ./bench/loadcompare $(BENCHFLAGS)

## image: the container image, tagged with the version (IMAGE=… to push elsewhere;
## PLATFORMS=linux/amd64,linux/arm64 with docker buildx for a multi-arch image)
IMAGE ?= ghcr.io/tokenbroker/tokenbroker
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE) \
	  -t $(IMAGE):$(VERSION) .

## release: static binaries for each platform in $(DIST), and their SHA256SUMS
DIST      ?= dist
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
SHA256SUM ?= $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo shasum -a 256)
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	set -e; for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; \
	  echo "building $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
	    -o $(DIST)/tokenbroker-$(VERSION)-$$os-$$arch ./cmd/tokenbroker; \
	done
	cp LICENSE NOTICE $(DIST)/
	cd $(DIST) && $(SHA256SUM) tokenbroker-* LICENSE NOTICE > SHA256SUMS

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN) $(DIST)

# tokenbroker — read top to bottom: build, run, test, bench, lint.
GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 15s

.PHONY: all build run test test-deps unit fuzz bench lint clean

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
	-$(GO) run ./bench/rss -n 100000
	bench/install-ghz.sh
	$(GO) run ./bench/loadcompare $(BENCHFLAGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN)

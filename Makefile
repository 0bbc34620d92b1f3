# upgraded: `make demo` shows a local cluster upgraded end to end;
# `make test` runs every check CI runs.
GO        ?= go
BIN       := bin/upgraded
GOFLAGS   ?=
STATICCHECK_VERSION := v0.8.2
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build demo test check unit e2e bench fmt vet staticcheck clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/upgraded

# A 3-peer simulated cluster (PEERS=5 for more) upgraded from 1.0.8 to 1.1.6.
PEERS ?= 3
demo: build
	./$(BIN) demo --peers $(PEERS)

test: check
	$(GO) test -race -count=1 -timeout 40m ./...

check: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	staticcheck ./...

# Benchmarks print figures (downtime next to a plain script, restart skew).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./internal/e2e/ ./statebackup/

clean:
	rm -rf bin

# Sluice: every target works on a fresh machine with only Go (and, for the e2e suite,
# a Docker engine) installed.

MODULES := pkg/throttle services/ingestion services/processing e2e deploy/local
GO ?= go

.PHONY: all build test test-short bench fuzz vet check-modules run generate clean

all: build

build:
	@for m in $(MODULES); do (cd $$m && $(GO) build -o /dev/null ./...) || exit 1; done

## test: the whole suite with the race detector, every module.
test: vet
	@rm -f e2e/.build/summary.txt
	@# go test hides a passing package's output: after e2e, show what its scenarios measured.
	@for m in $(MODULES); do echo "== $$m"; (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...) || exit 1; \
		if [ $$m = e2e ] && [ -f e2e/.build/summary.txt ]; then cat e2e/.build/summary.txt; fi; done

vet:
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

## check-modules: each module builds on its own, so a go.mod that only works inside the
## workspace is caught.
check-modules:
	@for m in $(MODULES); do echo "== GOWORK=off $$m"; (cd $$m && GOWORK=off $(GO) build -o /dev/null ./... && GOWORK=off $(GO) vet ./...) || exit 1; done

## bench: the benchmarks whose figures the issues ask for.
bench:
	cd pkg/throttle && $(GO) test -run '^$$' -bench . -benchmem -count=1 ./...
	cd services/ingestion && $(GO) test -run '^$$' -bench 'BenchmarkIngest$$' -benchtime 2s -count=1 .
	cd services/ingestion && $(GO) test -run '^$$' -bench 'BenchmarkIngest(Ratio|Latency)$$' -benchtime 1x -count=1 -v .

## fuzz: the decoder's fuzz target for FUZZTIME (default 1m).
FUZZTIME ?= 1m
fuzz:
	cd pkg/throttle && $(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) .

## run: the whole suite locally on an embedded broker and registry.
## ARGS=-infra-only starts only the broker and registry; ARGS=-demo drives traffic.
run:
	$(GO) run ./deploy/local $(ARGS)

generate:
	cd pkg/throttle && $(GO) generate ./...

clean:
	rm -rf .sluice-data

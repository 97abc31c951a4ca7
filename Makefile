# Sluice: every target works on a fresh machine with only Go (and, for the e2e suite,
# a Docker engine) installed.

MODULES := pkg/throttle pkg/throttle/throttletest services/platform services/ingestion services/processing services/throttlectl deploy deploy/local e2e
GO ?= go

.PHONY: all build test test-short bench bench-kafka fuzz vet check-modules run generate clean kafka mirrormaker test-kafka

all: build

build:
	@for m in $(MODULES); do (cd $$m && $(GO) build -o /dev/null ./...) || exit 1; done

## test: the whole suite with the race detector, every module. Where a Docker engine
## answers, the e2e suite runs on real Kafka in containers, whose image is built from
## make kafka's jars.
test: vet
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory kafka; fi
	@rm -f e2e/.build/summary.txt
	@# go test hides a passing package's output: after e2e, show what its scenarios measured.
	@for m in $(MODULES); do echo "== $$m"; (cd $$m && $(GO) test -race -count=1 -timeout 45m ./...) || exit 1; \
		if [ $$m = e2e ] && [ -f e2e/.build/summary.txt ]; then cat e2e/.build/summary.txt; fi; done
	@# The read path's model test: thousands of random logs and faults, without the race
	@# detector (which runs 200 of them above); MODEL_CASES sets how many.
	@cd pkg/throttle && out=$$($(GO) test -count=1 -timeout 20m -run '^TestModelRandomLogs$$' -model.cases $(MODEL_CASES) -v . 2>&1); rc=$$?; \
		printf '%s\n' "$$out" | grep -E '^(---|ok|FAIL|PASS)|model:|seed|panic' | head -40; exit $$rc

MODEL_CASES ?= 2000

vet:
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

## check-modules: each module builds on its own, so a go.mod that only works inside the
## workspace is caught.
check-modules:
	@for m in $(MODULES); do echo "== GOWORK=off $$m"; (cd $$m && GOWORK=off $(GO) build -o /dev/null ./... && GOWORK=off $(GO) vet ./...) || exit 1; done

## kafka: Apache Kafka's jars (KAFKA_VERSION, default 4.4.0; 3.9.2 for the 3.9 line) into
## .kafka/<version>/libs (git-ignored): copied from KAFKA_JARS when it is set (a Kafka
## distribution's libs/, or any folder of the same jars; checked against a SHA256SUMS beside
## it when there is one), else fetched with their runtime dependencies from Maven Central.
## Skipped when they are there already. The source is never written to: the tests leave
## their class-data archives and storage templates beside the copy.
KAFKA_VERSION ?= 4.4.0
# Where a folder of the jars sits beside the repository (as on the project's machines,
# which reach no Maven repository), it is the default.
KAFKA_JARS ?= $(firstword $(wildcard $(CURDIR)/../shared/kafka/$(KAFKA_VERSION)/libs))
KAFKA_LIBS := $(CURDIR)/.kafka/$(KAFKA_VERSION)/libs
kafka: $(KAFKA_LIBS)/.complete

$(KAFKA_LIBS)/.complete: deploy/kafka/pom.xml
	@rm -rf $(KAFKA_LIBS).tmp
ifneq ($(KAFKA_JARS),)
	@test -f "$(KAFKA_JARS)/kafka_2.13-$(KAFKA_VERSION).jar" || { echo "make kafka: $(KAFKA_JARS) has no kafka_2.13-$(KAFKA_VERSION).jar (KAFKA_VERSION=$(KAFKA_VERSION))"; exit 1; }
	@if [ -f "$(KAFKA_JARS)/../SHA256SUMS" ]; then (cd "$(KAFKA_JARS)" && sha256sum --quiet -c ../SHA256SUMS) || { echo "make kafka: $(KAFKA_JARS) does not match its SHA256SUMS"; exit 1; }; fi
	mkdir -p $(KAFKA_LIBS).tmp && cp "$(KAFKA_JARS)"/*.jar $(KAFKA_LIBS).tmp/
else
	@command -v mvn >/dev/null || { echo "make kafka needs Maven (and Java 17 to run Kafka), or KAFKA_JARS=<a folder of Kafka's jars>"; exit 1; }
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies -Dkafka.version=$(KAFKA_VERSION) -DoutputDirectory=$(KAFKA_LIBS).tmp
endif
	@# New jars void the class-data archives the tests made from the old ones.
	@rm -rf $(KAFKA_LIBS) $(dir $(KAFKA_LIBS))classes-*.jsa && mv $(KAFKA_LIBS).tmp $(KAFKA_LIBS) && touch $@

## mirrormaker: MirrorMaker 2's jars (MM2_VERSION, default 4.3.1: connect-mirror 4.4.0 is
## not published) into .kafka/mirrormaker-<version>/libs, for the two-region tests. Copied
## from MM2_JARS (default ../shared/kafka/mirrormaker-<version>/libs, checked against its
## SHA256SUMS), else fetched from Maven Central with deploy/kafka/mirrormaker-pom.xml.
MM2_VERSION ?= 4.3.1
MM2_JARS ?= $(firstword $(wildcard $(CURDIR)/../shared/kafka/mirrormaker-$(MM2_VERSION)/libs))
MM2_LIBS := $(CURDIR)/.kafka/mirrormaker-$(MM2_VERSION)/libs
mirrormaker: $(MM2_LIBS)/.complete

$(MM2_LIBS)/.complete: deploy/kafka/mirrormaker-pom.xml
	@rm -rf $(MM2_LIBS).tmp
ifneq ($(MM2_JARS),)
	@test -f "$(MM2_JARS)/connect-mirror-$(MM2_VERSION).jar" || { echo "make mirrormaker: $(MM2_JARS) has no connect-mirror-$(MM2_VERSION).jar"; exit 1; }
	@if [ -f "$(MM2_JARS)/../SHA256SUMS" ]; then (cd "$(MM2_JARS)" && sha256sum --quiet -c ../SHA256SUMS) || { echo "make mirrormaker: $(MM2_JARS) does not match its SHA256SUMS"; exit 1; }; fi
	mkdir -p $(MM2_LIBS).tmp && cp "$(MM2_JARS)"/*.jar $(MM2_LIBS).tmp/
else
	@command -v mvn >/dev/null || { echo "make mirrormaker needs Maven, or MM2_JARS=<a folder of MirrorMaker 2's jars>"; exit 1; }
	mvn -q -B -f deploy/kafka/mirrormaker-pom.xml dependency:copy-dependencies -Dmm2.version=$(MM2_VERSION) -DoutputDirectory=$(MM2_LIBS).tmp
endif
	@rm -rf $(MM2_LIBS) && mv $(MM2_LIBS).tmp $(MM2_LIBS) && touch $@

## test-kafka: the integration tests of pkg/throttle, its test support, throttlectl and both
## services on a real KRaft cluster of 3 nodes (SLUICE_TEST_KAFKA=real), one cluster per
## test package; -p 1 so that only one cluster runs at a time. Every module runs, and
## the target fails if any failed.
KAFKA_TEST_MODULES := pkg/throttle pkg/throttle/throttletest services/ingestion services/processing services/throttlectl
test-kafka: kafka mirrormaker
	@status=0; for m in $(KAFKA_TEST_MODULES); do echo "== $$m on Apache Kafka $(KAFKA_VERSION)"; \
		(cd $$m && SLUICE_TEST_KAFKA=real SLUICE_KAFKA_LIBS=$(KAFKA_LIBS) SLUICE_MM2_LIBS=$(MM2_LIBS) $(GO) test -race -count=1 -p 1 -timeout 40m ./...) || status=1; \
	done; exit $$status

## bench: the benchmarks whose figures the issues ask for.
bench:
	cd pkg/throttle && $(GO) test -run '^$$' -bench . -benchmem -count=1 ./...
	cd services/ingestion && $(GO) test -run '^$$' -bench 'BenchmarkIngest$$' -benchtime 2s -count=1 .
	cd services/ingestion && $(GO) test -run '^$$' -bench 'BenchmarkIngest(Ratio|Latency)$$' -benchtime 1x -count=1 -v .

## bench-kafka: the propagation benchmark (publish → visible in 3 tables) and the rebuild
## benchmark (a table's rebuild beside raw kafka-go reading of the same topic,
## BENCH_RECORDS records), first on the in-process broker, then on the real cluster.
bench-kafka: kafka
	cd pkg/throttle && $(GO) test -run '^$$' -bench 'Benchmark(Propagation|RebuildRatio)$$' -benchtime 1x -count=1 .
	cd pkg/throttle && SLUICE_TEST_KAFKA=real SLUICE_KAFKA_LIBS=$(KAFKA_LIBS) $(GO) test -run '^$$' -bench 'Benchmark(Propagation|RebuildRatio)$$' -benchtime 1x -count=1 -timeout 30m .

## fuzz: every fuzz target for FUZZTIME each (default 1m; CI runs them for 10s each).
## Targets: module directory, package, name.
FUZZTIME ?= 1m
# Go minimizes every input that finds new code for up to a minute by default, and does not
# fuzz meanwhile: a short run would spend its time minimizing.
FUZZMINIMIZETIME ?= 5s
FUZZ_TARGETS := \
	pkg/throttle:.:FuzzDecode \
	pkg/throttle:.:FuzzFastDecodeMatchesGoavro \
	pkg/throttle:.:FuzzRecordToRule \
	pkg/throttle:./internal/fetch:FuzzBatchRecords \
	services/platform:./event:FuzzDecode \
	services/platform:./event:FuzzAppendMatchesEncodingJSON \
	services/platform:./mirror:FuzzDecode \
	services/platform:./audit:FuzzParse \
	services/ingestion:./internal/server:FuzzParseEvents \
	services/ingestion:./internal/server:FuzzParseEventsAgainstEncodingJSON \
	services/ingestion:./internal/limit:FuzzLimiterMatchesExactGCRA
fuzz:
	@for t in $(FUZZ_TARGETS); do m=$${t%%:*}; rest=$${t#*:}; p=$${rest%%:*}; f=$${rest#*:}; \
		echo "== fuzz $$m $$p $$f for $(FUZZTIME)"; \
		(cd $$m && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$p) || exit 1; done

## run: the whole suite locally on an embedded broker and registry.
## ARGS=-infra-only starts only the broker and registry; ARGS=-demo drives traffic.
run:
	$(GO) run ./deploy/local $(ARGS)

generate:
	cd pkg/throttle && $(GO) generate ./...

clean:
	rm -rf .sluice-data

// Package e2e runs Sluice as users deploy it, as containers on a private network, and
// checks it from outside with testcontainers-go.
//
// # Running
//
//	cd e2e && go test -race -v ./...
//
// It needs a Docker engine and nothing from an image registry. Without an engine the
// suite skips, unless E2E_REQUIRE_DOCKER=1 (CI sets it), where it fails; -short skips it
// too. E2E_VERBOSE=1 shows testcontainers' own log. Each container's log is saved under
// e2e/.build/logs/<stack>/ when its stack is removed, and the figures the scenarios
// measured in e2e/.build/summary.txt.
//
// # What runs
//
// TestMain builds the static binaries (CGO_ENABLED=0) into deploy/docker/bin and the
// images from the repository's Dockerfiles: ingestion, processing, throttlectl and the
// probe from deploy/docker/Dockerfile.prebuilt, the fake infrastructure from
// deploy/local/Dockerfile. A stack is one network with
//
//   - kafka-1, kafka-2, kafka-3: a KRaft cluster of three (each broker and controller;
//     replication factor 3, min.insync.replicas 2), configured through KAFKA_* variables
//     as the official image documents. The image is apache/kafka:4.4.0 where it can be
//     pulled (or E2E_KAFKA_IMAGE), else deploy/kafka/image built here from make kafka's
//     jars (build.sh: once, and again only when an input changes). E2E_KAFKA_IMAGE=fake
//     runs deploy/local -mode broker (kfake) alone instead, for quick local runs; the
//     scenarios that need a cluster skip there;
//   - registry: confluentinc/cp-schema-registry when it can be pulled (or
//     E2E_REGISTRY_IMAGE), else deploy/local -mode registry (srfake behind
//     throttletest/registry, keeping its schemas in the brokers' _schemas topic as
//     the real one does, and checking compatibility). Brokers and registry are separate
//     containers, so that either can be stopped alone;
//   - processing, and ingestion replicas, configured through their environment as in
//     production;
//   - probe (cmd/probe), the test's hands inside the network.
//
// TestCompose brings up the repository's docker-compose.yml with docker-compose (its
// own project, torn down with its volumes), with compose.override.yml swapping only the
// Kafka and registry images.
//
// Ryuk is off (it is an image); each stack removes its containers and network itself,
// and a run removes what an interrupted run on the same host left behind.
//
// # Reaching Kafka from the test
//
// Each broker advertises its network alias (kafka-1:9092, ...), so that the services
// in other containers can reach it; the test process on the host cannot resolve that name, and a
// listener advertised for both sides would need a second listener and a host port
// known before the broker starts. So the test never talks to Kafka itself: it checks
// the services through their HTTP APIs (mapped ports, read again after a container
// restarts), and does what only a Kafka client can do (read the throttle topic from
// offset zero, write a poison record, shorten delete.retention.ms) through the probe's
// HTTP API. The Schema Registry is plain HTTP: the test decodes the records the probe
// returns with pkg/throttle's codec against the registry's mapped port.
//
// # Sharing
//
// Most scenarios share one stack, started on first use and each using customers of its
// own; the scenarios that stop, kill or cut off infrastructure start stacks of their
// own. Each scenario prints what it measured (t.Log and stdout), and TestMain prints
// them all again at the end.
package e2e

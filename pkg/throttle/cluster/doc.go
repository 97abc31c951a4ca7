// Package cluster is Sluice's Kafka plumbing, in one place: how to reach the cluster
// (Config: brokers, TLS, SASL, for kafka-go's Transport and Dialer alike), writers with
// the settings a source of truth needs (acks from all in-sync replicas, the Java client's
// partitioner, a short batch timeout), closing a writer with its transport, and creating
// and waiting for topics. The throttle library and the services build on it.
package cluster

// Package throttle is the library a service imports to enforce or publish throttles: the
// throttle record, its wire format (Confluent-framed Avro with the schema in a Schema
// Registry), the compacted topic that holds the throttles, and the pieces built on it:
// the Table that ingestion replicas read from offset zero and then tail, and the
// Publisher that processing services and operators write with. Its subpackages: cluster
// (the Kafka plumbing), follow (the read loop), expiry (the Sweeper), throttlejson (the
// JSON shape).
//
// The topic is the source of truth. Every record is keyed by customer; the latest value
// per key is that customer's throttle, and a tombstone (null value) lifts it. Anything a
// service holds in memory can be rebuilt by reading the topic from the start.
package throttle

//go:generate cp ../../schemas/throttle.avsc throttle.avsc

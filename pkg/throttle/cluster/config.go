package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Config says how to reach the Kafka cluster. kafka-go keeps TLS and SASL in two
// places (Transport for Writer and Client, Dialer for Reader and Conn); this type fills
// both from one description.
type Config struct {
	Brokers  []string
	ClientID string // defaults to "sluice"
	TLS      *tls.Config
	SASL     sasl.Mechanism
}

// SASLMechanism builds a SASL mechanism from its name: "" (none), "PLAIN",
// "SCRAM-SHA-256" or "SCRAM-SHA-512".
func SASLMechanism(name, user, pass string) (sasl.Mechanism, error) {
	switch strings.ToUpper(name) {
	case "", "NONE":
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: pass}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, user, pass)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, user, pass)
	}
	return nil, fmt.Errorf("sasl mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", name)
}

// Explain adds to a connection error what it likely means with this configuration. A
// listener that requires SASL closes a connection that sends no SASL handshake, and
// kafka-go then reports only "unexpected EOF".
func (k Config) Explain(err error) error {
	if err == nil || k.SASL != nil || !errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "expecting TLS") {
		return err
	}
	return fmt.Errorf("%w (the broker closed the connection without an answer: if its listener requires SASL, set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD)", err)
}

// Validate refuses a configuration that names no broker.
func (k Config) Validate() error {
	if len(k.Brokers) == 0 {
		return errors.New("kafka config: no brokers")
	}
	return nil
}

// ClientName is the client id sent to brokers: ClientID, or "sluice".
func (k Config) ClientName() string {
	if k.ClientID == "" {
		return "sluice"
	}
	return k.ClientID
}

// Transport returns a kafka-go transport (for Writer and Client) carrying the client id,
// TLS and SASL. Close its idle connections when done with it.
func (k Config) Transport() *kafka.Transport { return k.TransportTTL(10 * time.Second) }

// TransportTTL is transport with a metadata cache of ttl: kafka-go's Client answers
// metadata requests from that cache, so a reader of topology changes needs it short.
func (k Config) TransportTTL(ttl time.Duration) *kafka.Transport {
	return &kafka.Transport{
		ClientID:    k.ClientName(),
		TLS:         k.TLS,
		SASL:        k.SASL,
		DialTimeout: 5 * time.Second,
		MetadataTTL: ttl,
	}
}

// Dialer returns a kafka-go dialer (for Reader and Conn) carrying the client id, TLS and
// SASL.
func (k Config) Dialer() *kafka.Dialer {
	return &kafka.Dialer{
		ClientID:      k.ClientName(),
		Timeout:       5 * time.Second,
		DualStack:     true,
		TLS:           k.TLS,
		SASLMechanism: k.SASL,
	}
}

// Client returns a kafka-go client of every broker, each request bounded by timeout,
// over a transport of its own (close its idle connections when done).
func (k Config) Client(timeout time.Duration) *kafka.Client {
	return &kafka.Client{
		Addr:      kafka.TCP(k.Brokers...),
		Timeout:   timeout,
		Transport: k.Transport(),
	}
}

// Addr is the first broker as a net.Addr, for requests that kafka-go sends to one broker.
func (k Config) Addr() net.Addr { return kafka.TCP(k.Brokers...) }

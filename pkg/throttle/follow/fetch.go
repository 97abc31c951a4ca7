package follow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/pkg/throttle/internal/fetch"
)

// A fetch goes through kafka-go's transport (connections, TLS, SASL, the partition
// leader's address), but its answer is decoded here with franz-go's kmsg, and its record
// batches by internal/fetch: kafka-go's own decoder copies every record twice and does
// not decode a batch's last offset, which is what lets the read loop pass over an empty
// batch or a compacted tail in one step.

// maxFetchResponse bounds the answer a fetch reads: a peer that is no Kafka broker (a TLS
// listener, an HTTP server) announces sizes far beyond it.
const maxFetchResponse = 256 << 20

// fetchRequest is kafka-go's Fetch request, sent and answered by fetchRequest itself
// (kafka-go's RawExchanger hook) at the version the connection negotiated.
type fetchRequest struct {
	*fetchAPI.Request
	clientID string
	version  int16
}

// Required records the negotiated version; the exchange is always done here.
func (r *fetchRequest) Required(versions map[protocol.ApiKey]int16) bool {
	r.version = versions[protocol.Fetch]
	return true
}

// fetchCorrelation is the id of every fetch: a connection carries one exchange at a time.
const fetchCorrelation = 1

// RawExchange writes the request and reads and decodes its answer.
func (r *fetchRequest) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	if r.version < 4 || r.version >= 12 { // v4 brings read-committed; v12 a new header
		return nil, fmt.Errorf("fetch v%d negotiated: only v4 to v11 are read", r.version)
	}
	if err := protocol.WriteRequest(rw, r.version, fetchCorrelation, r.clientID, r.Request); err != nil {
		return nil, err
	}
	var head [4]byte
	if _, err := io.ReadFull(rw, head[:]); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(head[:]))
	if size < 4 || size > maxFetchResponse {
		return nil, fmt.Errorf("fetch answer announces %d bytes: not a Kafka broker's answer", size)
	}
	frame := make([]byte, size)
	if _, err := io.ReadFull(rw, frame); err != nil {
		return nil, err
	}
	if id := int32(binary.BigEndian.Uint32(frame)); id != fetchCorrelation {
		return nil, fmt.Errorf("fetch answer has correlation id %d, want %d", id, fetchCorrelation)
	}
	body := frame[4:]
	res := kmsg.NewPtrFetchResponse()
	res.Version = r.version
	if err := res.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode fetch answer: %w", err)
	}
	return &fetchResponse{res}, nil
}

// fetchResponse carries the decoded answer back through kafka-go's transport.
type fetchResponse struct{ *kmsg.FetchResponse }

// ApiKey names the answer kafka-go's transport expects: Fetch.
func (*fetchResponse) ApiKey() protocol.ApiKey { return protocol.Fetch }

// fetched is one partition's part of a fetch answer.
type fetched struct {
	HighWatermark int64
	Aborted       []kmsg.FetchResponseTopicPartitionAbortedTransaction
	Batches       []fetch.Batch
	// Partial reports bytes after the last whole batch: the size limit cut a batch.
	Partial bool
}

// partitionOf finds the fetched partition in a decoded answer and checks its errors.
func partitionOf(res *kmsg.FetchResponse, topic string, part int) (*kmsg.FetchResponseTopicPartition, error) {
	if res.ErrorCode != 0 {
		return nil, kafka.Error(res.ErrorCode)
	}
	for i := range res.Topics {
		t := &res.Topics[i]
		if t.Topic != topic {
			continue
		}
		for j := range t.Partitions {
			if p := &t.Partitions[j]; p.Partition == int32(part) {
				if p.ErrorCode != 0 {
					return nil, kafka.Error(p.ErrorCode)
				}
				return p, nil
			}
		}
	}
	return nil, errors.New("answer names no such partition")
}

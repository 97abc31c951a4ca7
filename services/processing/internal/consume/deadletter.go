package consume

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/sluice-dev/sluice/services/platform/wait"
)

// Headers of a dead-lettered record. The record keeps the original key, value and
// headers; these are added (replacing any from an earlier trip through the dead-letter
// topic).
const (
	HeaderError     = "dlq.error"     // the error, in words
	HeaderStage     = "dlq.stage"     // StageDecode or StageHandler
	HeaderTopic     = "dlq.topic"     // where the record came from
	HeaderPartition = "dlq.partition" // decimal
	HeaderOffset    = "dlq.offset"    // decimal
	HeaderTime      = "dlq.time"      // when it was dead-lettered, RFC 3339 UTC
	HeaderAttempts  = "dlq.attempts"  // handler attempts made (0 for StageDecode)
	HeaderInstance  = "dlq.instance"  // the processing replica
)

// Values of HeaderStage.
const (
	StageDecode  = "decode"  // the value is not a valid event
	StageHandler = "handler" // the handler failed on every attempt
)

// maxErrorHeader bounds the error header: an error can quote a whole payload.
const maxErrorHeader = 1024

// deadLetter is a record of a batch that goes to the dead-letter topic, and why.
type deadLetter struct {
	index    int // in the batch
	stage    string
	attempts int
	cause    error
}

// deadLetters writes the batch's dead letters to the dead-letter topic in one write,
// retrying until it succeeds: an event is committed only once it is handled or
// dead-lettered, never dropped. It returns false when ctx ends first.
func (c *Consumer) deadLetters(ctx context.Context, batch []fetched, dead []deadLetter) bool {
	out := make([]kafka.Message, len(dead))
	for i, d := range dead {
		msg := batch[d.index].msg
		out[i] = kafka.Message{Key: msg.Key, Value: msg.Value, Headers: deadLetterHeaders(msg, d.stage, d.attempts, d.cause, c.now(), c.cfg.InstanceID)}
	}
	backoff := c.cfg.Backoff
	for {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.HandlerTimeout)
		err := c.dlq.WriteMessages(wctx, out...)
		cancel()
		if err == nil {
			break
		}
		c.log.Error("write dead letters", zap.Int("events", len(out)), zap.Error(err), zap.Duration("retry_in", backoff))
		if !wait.Sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
	for _, d := range dead {
		msg := batch[d.index].msg
		c.metrics.DeadLettered.WithLabelValues(d.stage).Inc()
		c.metrics.Events.WithLabelValues("dead_lettered").Inc()
		// Poison events are rare and each one is worth a line an operator can find.
		c.log.Warn("event dead-lettered", zap.String("stage", d.stage), zap.String("topic", msg.Topic),
			zap.Int("partition", msg.Partition), zap.Int64("offset", msg.Offset),
			zap.Int("attempts", d.attempts), zap.Error(d.cause))
	}
	return true
}

func deadLetterHeaders(msg kafka.Message, stage string, attempts int, cause error, now time.Time, instance string) []kafka.Header {
	hs := make([]kafka.Header, 0, len(msg.Headers)+8)
	for _, h := range msg.Headers {
		if !strings.HasPrefix(h.Key, "dlq.") {
			hs = append(hs, h)
		}
	}
	return append(hs,
		kafka.Header{Key: HeaderError, Value: []byte(truncate(cause.Error(), maxErrorHeader))},
		kafka.Header{Key: HeaderStage, Value: []byte(stage)},
		kafka.Header{Key: HeaderTopic, Value: []byte(msg.Topic)},
		kafka.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(msg.Partition))},
		kafka.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(msg.Offset, 10))},
		kafka.Header{Key: HeaderTime, Value: []byte(now.UTC().Format(time.RFC3339Nano))},
		kafka.Header{Key: HeaderAttempts, Value: []byte(strconv.Itoa(attempts))},
		kafka.Header{Key: HeaderInstance, Value: []byte(instance)},
	)
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

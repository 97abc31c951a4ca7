package follow

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
)

// TestFetchExchangeRefusesWhatNoBrokerSends: answers that are no Kafka broker's (a TLS
// alert, another exchange's answer, a version without read-committed) are errors, and
// the request written is kafka-go's.
func TestFetchExchangeRefusesWhatNoBrokerSends(t *testing.T) {
	frame := func(correlation int32, body ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
		return append(binary.BigEndian.AppendUint32(b, uint32(correlation)), body...)
	}
	for _, c := range []struct {
		name    string
		version int16
		answer  []byte
		want    string
	}{
		{"a TLS alert", 11, []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46}, "not a Kafka broker's answer"},
		{"another exchange's answer", 11, frame(7, make([]byte, 16)...), "correlation id 7"},
		{"a cut answer", 11, frame(fetchCorrelation, 0, 0)[:9], "EOF"},
		{"a version without read-committed", 3, nil, "only v4 to v11"},
	} {
		var sent bytes.Buffer
		req := &fetchRequest{Request: &fetchAPI.Request{Topics: []fetchAPI.RequestTopic{{Topic: "t"}}}, clientID: "sluice"}
		req.Required(map[protocol.ApiKey]int16{protocol.Fetch: c.version})
		_, err := req.RawExchange(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(c.answer), &sent})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one that says %q", c.name, err, c.want)
		}
		if c.version >= 4 {
			if _, _, _, msg, err := protocol.ReadRequest(&sent); err != nil || msg.(*fetchAPI.Request).Topics[0].Topic != "t" {
				t.Errorf("%s: the request sent does not read back: %v", c.name, err)
			}
		}
	}
}

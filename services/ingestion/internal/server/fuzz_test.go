package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// FuzzParseEvents feeds the request body parser arbitrary bytes, with and without an API
// key's customer. It must never panic, and what it accepts must keep the rules the
// handler relies on: at least one event, one valid customer (the key's, if any), valid
// ids, payloads that are JSON.
func FuzzParseEvents(f *testing.F) {
	for _, seed := range []struct{ body, key string }{
		{`{"customer":"acme","id":"e1","payload":{"n":1}}`, ""},
		{`[{"customer":"acme"},{"customer":"acme","payload":[1,2]}]`, ""},
		{`[{"customer":"acme"},{"customer":"other"}]`, ""},
		{`{"payload":"x"}`, "acme"},
		{`[{},{"customer":"other"}]`, "acme"},
		{`[]`, ""},
		{`{"customer":"ac\u0007me"}`, ""},
		{"{\"customer\":\"\xff\"}", ""},
		{`{"customer":"acme"} trailing`, ""},
		{`{"customer":"acme","unknown":1}`, ""},
		{`{"customer":null,"payload":null}`, ""},
	} {
		f.Add([]byte(seed.body), seed.key)
	}
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		if key != "" && throttle.ValidateCustomer(key) != nil {
			key = "" // configured keys name valid customers
		}
		events, aerr := appendEvents(nil, body, key)
		if aerr != nil {
			if events != nil {
				t.Fatalf("error %v with %d events", aerr, len(events))
			}
			switch {
			case aerr.Status == http.StatusBadRequest:
			case aerr.Status == http.StatusForbidden && key != "":
			default:
				t.Fatalf("status %d (key %q): want 400, or 403 with a key", aerr.Status, key)
			}
			if aerr.Message == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if len(events) == 0 {
			t.Fatal("accepted no events")
		}
		c := events[0].Customer
		if err := throttle.ValidateCustomer(c); err != nil {
			t.Fatalf("accepted invalid customer %q: %v", c, err)
		}
		if key != "" && c != key {
			t.Fatalf("accepted customer %q with a key for %q", c, key)
		}
		for i, e := range events {
			if e.Customer != c {
				t.Fatalf("event %d: customer %q, first was %q", i, e.Customer, c)
			}
			if msg := checkID(e.ID); msg != "" {
				t.Fatalf("event %d: accepted bad id: %s", i, msg)
			}
			if e.Payload != nil && !json.Valid(e.Payload) {
				t.Fatalf("event %d: payload %q is not JSON", i, e.Payload)
			}
		}
		if _, _, err := appendMessages(nil, nil, events, c, t0); err != nil {
			t.Fatalf("accepted events do not encode: %v", err)
		}
	})
}

// FuzzParseEventsAgainstEncodingJSON holds the token parser to encoding/json: whatever
// it accepts, encoding/json (reflecting into the same fields, unknown ones refused)
// accepts too and reads as the same events. The converse need not hold: the token
// parser is stricter (exact field names, no field twice).
func FuzzParseEventsAgainstEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"customer":"acme","id":"e1","payload":{"n":1}}`,
		`[{"customer":"acme","payload":"x"},{"customer":"acme","id":"\u00e9","payload":[1, 2]}]`,
		`{"Customer":"acme"}`,
		`{"customer":"acme","customer":"other"}`,
		`{"customer":"a\"b","payload":null}`,
		` [ {"customer" : "acme" , "payload" : { "a" : [ true , null ] } } ] `,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		events, aerr := appendEvents(nil, body, "")
		if aerr != nil {
			return
		}
		want, err := referenceParse(body)
		if err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		if len(events) != len(want) {
			t.Fatalf("%d events, encoding/json read %d", len(events), len(want))
		}
		for i := range events {
			g, w := events[i], want[i]
			if string(w.Payload) == "null" {
				w.Payload = nil
			}
			if g.Customer != w.Customer || string(g.ID) != string(w.ID) || string(g.Payload) != string(w.Payload) {
				t.Fatalf("event %d: got %+v, encoding/json read %+v", i, g, w)
			}
		}
	})
}

func referenceParse(body []byte) ([]inEvent, error) {
	type ev struct {
		ID       string          `json:"id"`
		Customer string          `json:"customer"`
		Payload  json.RawMessage `json:"payload"`
	}
	var evs []ev
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		var e ev
		if err := dec.Decode(&e); err != nil {
			return nil, err
		}
		evs = []ev{e}
	} else if err := dec.Decode(&evs); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the value: %v", err)
	}
	out := make([]inEvent, len(evs))
	for i, e := range evs {
		out[i] = inEvent{ID: []byte(e.ID), Customer: e.Customer, Payload: e.Payload}
	}
	return out, nil
}

package server

import (
	"net/http"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/pkg/throttle/throttlejson"
	"github.com/sluice-dev/sluice/services/ingestion/internal/limit"
)

// throttleJSON is a throttle as the views show it: the shape every Sluice program uses,
// plus this replica's share.
type throttleJSON struct {
	throttlejson.Record
	// Share is the part of Limit this replica enforces (Limit divided among the alive
	// replicas, rounded up; the full limit while the fleet size is unknown).
	Share int64 `json:"share"`
}

// freshnessJSON says how far this replica's view can be trusted.
type freshnessJSON struct {
	Replica    string           `json:"replica"`
	Ready      bool             `json:"ready"`
	Fresh      bool             `json:"fresh"`
	Fleet      fleetJSON        `json:"fleet"`
	Partitions []partitionJSON  `json:"partitions"`
	Poison     map[string]int64 `json:"poison,omitempty"`
}

type fleetJSON struct {
	Alive int  `json:"alive"`
	Known bool `json:"known"`
}

type partitionJSON struct {
	Partition     int   `json:"partition"`
	Position      int64 `json:"position"`
	End           int64 `json:"end"`
	HighWatermark int64 `json:"high_watermark"`
	Lag           int64 `json:"lag"`
	CaughtUp      bool  `json:"caught_up"`
}

func (s *Server) freshness() freshnessJSON {
	st := s.table.Stats()
	f := freshnessJSON{Replica: s.cfg.Replica, Ready: st.Ready, Fresh: st.Fresh, Poison: st.Poison, Partitions: []partitionJSON{}}
	if s.fleet != nil {
		f.Fleet.Alive, f.Fleet.Known = s.fleet.Size()
	} else {
		f.Fleet = fleetJSON{Alive: 1, Known: true}
	}
	for _, p := range st.Partitions {
		f.Partitions = append(f.Partitions, partitionJSON{
			Partition: p.Partition, Position: p.Position, End: p.End, HighWatermark: p.HighWatermark,
			Lag: p.Lag, CaughtUp: p.CaughtUp,
		})
	}
	return f
}

func (s *Server) toJSON(r throttle.Record, f fleetJSON) throttleJSON {
	return throttleJSON{Record: throttlejson.From(r), Share: limit.Share(r.Limit, f.Alive, f.Known)}
}

// viewer returns the customer a request may see, "" for all. With API keys on, a key
// sees only its own customer's throttle.
func (s *Server) viewer(w http.ResponseWriter, r *http.Request) (customer string, ok bool) {
	if s.keys == nil {
		return "", true
	}
	c, aerr := s.keys.customer(r)
	if aerr != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		writeJSON(w, aerr.Status, aerr)
		return "", false
	}
	return c, true
}

// listThrottles answers this replica's active throttles with its freshness. Before the
// table is ready the list is empty and "ready" is false.
func (s *Server) listThrottles(w http.ResponseWriter, r *http.Request) {
	only, ok := s.viewer(w, r)
	if !ok {
		return
	}
	f := s.freshness()
	out := struct {
		freshnessJSON
		Throttles []throttleJSON `json:"throttles"`
	}{freshnessJSON: f, Throttles: []throttleJSON{}}
	for _, rec := range s.table.Active() {
		if only == "" || rec.Customer == only {
			out.Throttles = append(out.Throttles, s.toJSON(rec, f.Fleet))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// getThrottle answers one customer's throttle: 404 when it has none, 503 while the table
// is not ready (it cannot know yet).
func (s *Server) getThrottle(w http.ResponseWriter, r *http.Request) {
	only, ok := s.viewer(w, r)
	if !ok {
		return
	}
	customer, aerr := customerFromPath(r)
	if aerr != nil {
		writeJSON(w, aerr.Status, aerr)
		return
	}
	if only != "" && customer != only {
		writeJSON(w, http.StatusForbidden, &apiError{Message: "the API key does not allow this customer", Field: "customer"})
		return
	}
	f := s.freshness()
	if !f.Ready {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, struct {
			freshnessJSON
			Error string `json:"error"`
		}{f, "not ready: the throttle table is still catching up"})
		return
	}
	rec, found := s.table.Get(customer)
	if !found {
		writeJSON(w, http.StatusNotFound, struct {
			freshnessJSON
			Error string `json:"error"`
			Field string `json:"field"`
		}{f, "customer has no active throttle", "customer"})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		freshnessJSON
		Throttle throttleJSON `json:"throttle"`
	}{f, s.toJSON(rec, f.Fleet)})
}

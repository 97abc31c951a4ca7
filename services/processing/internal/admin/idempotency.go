package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pkg/throttle"
)

// HeaderIdempotencyKey names a write: retries of one request carry the same key, and
// set at most one throttle between them, whichever replica answers each.
const HeaderIdempotencyKey = "Idempotency-Key"

const (
	maxIdempotencyKey = 255
	// idemTTL and idemEntries bound what a replica remembers of keys. Past them a
	// retry is still safe: its record id comes from the key, and a throttle with that
	// id already in the table is answered as it is.
	idemTTL     = 24 * time.Hour
	idemEntries = 10000
)

// idempotentID is the record id of the throttle set under key. Every replica derives
// the same one, so a retry answered by another replica finds the throttle in its table
// instead of publishing a second one.
func idempotentID(key string) string {
	sum := sha256.Sum256([]byte("sluice-idempotency-key\x00" + key))
	return "idem-" + hex.EncodeToString(sum[:16])
}

// validKey reports whether key is 1 to 255 bytes of visible ASCII.
func validKey(key string) bool {
	if key == "" || len(key) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// idemEntry is what this replica published, or tried to, under a key: the record (so a
// retry writes the same record, same id and times), the request it came from, and
// whether the write was acknowledged.
type idemEntry struct {
	request   string // the request body's fields, to refuse a key used for another request
	rec       throttle.Record
	confirmed bool
	at        time.Time
}

type idemCache struct {
	mu      sync.Mutex
	entries map[string]idemEntry
}

func (c *idemCache) get(key string, now time.Time) (idemEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && now.Sub(e.at) > idemTTL {
		delete(c.entries, key)
		return idemEntry{}, false
	}
	return e, ok
}

func (c *idemCache) put(key string, e idemEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]idemEntry{}
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= idemEntries {
		// Forget the oldest: rare, and a forgotten key still finds its throttle by id.
		var oldest string
		for k, v := range c.entries {
			if oldest == "" || v.at.Before(c.entries[oldest].at) {
				oldest = k
			}
		}
		delete(c.entries, oldest)
	}
	c.entries[key] = e
}

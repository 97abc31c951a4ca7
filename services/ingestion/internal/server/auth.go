package server

import (
	"crypto/sha256"
	"net/http"
	"strings"
)

// keyring maps API keys to customers. Keys are held by their SHA-256: a map lookup on
// the digest takes no longer for a key that shares a prefix with a real one, so the
// lookup time does not leak keys, and the keys themselves are not kept in memory.
type keyring map[[sha256.Size]byte]string

func newKeyring(keys map[string]string) keyring {
	if len(keys) == 0 {
		return nil
	}
	k := make(keyring, len(keys))
	for key, customer := range keys {
		k[sha256.Sum256([]byte(key))] = customer
	}
	return k
}

// customer returns the customer of the request's key, from "Authorization: Bearer <key>"
// or "X-API-Key: <key>".
func (k keyring) customer(r *http.Request) (string, *apiError) {
	key := r.Header.Get("X-API-Key")
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", &apiError{Status: http.StatusUnauthorized, Field: "Authorization", Message: "want Authorization: Bearer <key>"}
		}
		key = strings.TrimSpace(token)
	}
	if key == "" {
		return "", &apiError{Status: http.StatusUnauthorized, Message: "an API key is required (Authorization: Bearer <key>, or X-API-Key)"}
	}
	c, ok := k[sha256.Sum256([]byte(key))]
	if !ok {
		return "", &apiError{Status: http.StatusUnauthorized, Message: "unknown API key"}
	}
	return c, nil
}

package deploycheck

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ConfigDefault is the envDefault of the field of cfg (a struct, embedded structs
// included) that reads the environment variable key.
func ConfigDefault(t testing.TB, cfg any, key string) string {
	t.Helper()
	var find func(reflect.Type) (string, bool)
	find = func(rt reflect.Type) (string, bool) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				if d, ok := find(f.Type); ok {
					return d, true
				}
				continue
			}
			if f.Tag.Get("env") == key {
				return f.Tag.Get("envDefault"), true
			}
		}
		return "", false
	}
	d, ok := find(reflect.TypeOf(cfg))
	if !ok {
		t.Fatalf("no configuration field reads %s", key)
	}
	return d
}

// AddrPort is the port of a listen address such as ":8080".
func AddrPort(t testing.TB, addr string) int {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	p, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("listen address %q has no port", addr)
	}
	return p
}

// ParseDuration parses a Go duration from the configuration ("20s").
func ParseDuration(t testing.TB, what, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return d
}

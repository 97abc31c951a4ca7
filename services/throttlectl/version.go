package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

func versionCommand() *command {
	return &command{
		name: "version", summary: "print throttlectl's version", output: true, offline: true,
		help: `
Prints the version of this build of throttlectl, from what the Go toolchain recorded in
the binary: the main module's version ("(devel)" for a build from a work tree without a
version), the VCS revision and commit time and whether the work tree had local changes
(when the build recorded them), the Go version and the platform. Contacts nothing and
reads no environment variable.`,
		define: func(*flag.FlagSet) action {
			return func(_ context.Context, s *session, _ []string) error {
				v := buildVersion(debug.ReadBuildInfo())
				if s.json {
					return writeJSON(s.stdout, v)
				}
				_, err := fmt.Fprintln(s.stdout, v.String())
				return err
			}
		},
	}
}

// versionInfo is what throttlectl version prints.
type versionInfo struct {
	Version  string `json:"version"`            // the main module's version, or (devel)
	Revision string `json:"revision,omitempty"` // vcs.revision
	Time     string `json:"time,omitempty"`     // vcs.time, RFC 3339
	Modified *bool  `json:"modified,omitempty"` // vcs.modified: the work tree had local changes
	Go       string `json:"go"`
	Platform string `json:"platform"` // GOOS/GOARCH the binary was built for
}

// buildVersion reads the build information debug.ReadBuildInfo returned (ok false: the
// binary has none).
func buildVersion(bi *debug.BuildInfo, ok bool) versionInfo {
	v := versionInfo{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, st := range bi.Settings {
		switch st.Key {
		case "vcs.revision":
			v.Revision = st.Value
		case "vcs.time":
			v.Time = st.Value
		case "vcs.modified":
			m := st.Value == "true"
			v.Modified = &m
		}
	}
	return v
}

// String is the one line of text output, e.g.
// "throttlectl v1.4.0, revision 0123abc… from 2026-01-02T15:04:05Z (modified), go1.26.8 linux/amd64".
func (v versionInfo) String() string {
	var b strings.Builder
	b.WriteString("throttlectl " + v.Version)
	if v.Revision != "" {
		b.WriteString(", revision " + v.Revision)
		if v.Time != "" {
			b.WriteString(" from " + v.Time)
		}
		if v.Modified != nil && *v.Modified {
			b.WriteString(" (modified)")
		}
	}
	fmt.Fprintf(&b, ", %s %s", v.Go, v.Platform)
	return b.String()
}

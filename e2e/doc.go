// Package e2e runs Sluice as users deploy it, as containers on a private network, and
// checks it from outside with testcontainers-go.
package e2e

// Package deploy holds the tests of the deployment files beside it (Kubernetes and
// Strimzi resources) against the schemas of the systems that apply them. It has no code
// of its own.
package deploy

// Package deploycheck is test support for checking the deployment files of the
// repository (docker-compose.yml, the manifests under deploy/k8s, the Dockerfiles, the
// Grafana dashboard and the Prometheus alerts) against a service's configuration and
// metrics, as throttletest is test support for talking to Kafka. It reads the files and
// offers the checks every service shares; what each service checks is in its own
// deploy_test.go.
//
// Its functions take the test and fail it, rather than return errors: a file that cannot
// be read or understood is a failed check. Functions that read the files expect the
// repository root from Root, which must be called from a test of services/<name>.
package deploycheck

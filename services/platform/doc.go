// Package platform is the root of the module both services (and throttlectl) share and
// nothing else needs: their configuration from the environment (envconfig), the events
// topic's format (event), the probe behind each image's health check
// (healthcheck), and the pause between retries (wait). It imports no test code.
package platform

module github.com/sluice-dev/sluice/e2e

go 1.26.0

replace github.com/sluice-dev/sluice/pkg/throttle => ../pkg/throttle

// Package e2e holds the end-to-end tests of CortexOS: they build the real
// binaries (cortex-scheduler, cortex-worker-echo, cortex and the
// send_echo_job script), run them as separate OS processes against a real
// NATS server, and check what they print, how they exit and what they log.
//
//	go test -race -count=1 ./test/e2e/
//
// The tests are skipped with -short. The binaries are built and run by
// internal/systest (see harness_test.go for what this package adds to it).
package e2e

package kvstore

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/storetest"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
)

// TestMain fails the run if, once every test has finished (and so every
// server and client is shut down), a goroutine of nats.go is still alive: a
// watcher whose goroutine was never released is the leak to look for.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if stacks := leftoverNATS(2 * time.Second); stacks != "" {
			fmt.Fprintf(os.Stderr, "kvstore: nats.go goroutines outlived the tests:\n%s\n", stacks)
			code = 1
		}
	}
	os.Exit(code)
}

// leftoverNATS waits up to d for nats.go goroutines to end and returns the
// stacks of those that did not.
func leftoverNATS(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/nats-io/nats.go") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Watch and List stop their nats.go watchers without leaving the watcher's
// delivery goroutine blocked, even when they stop with more records queued
// than the watcher's channel holds (nats.go buffers 256). TestMain checks.
func TestStopsWatchersCleanly(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	_, js := openJetStream(t, srv)
	ctx := t.Context()
	s := newStore(t, js, Config{})
	const jobs = 600
	for i := range jobs {
		if _, err := s.Create(ctx, storetest.NewJob(fmt.Sprintf("j%03d", i), lifecycle.Pending)); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			// Stall in the first call until the watch is cancelled, so the
			// rest of the initial records pile up in nats.go's channel.
			done <- s.Watch(wctx, func(jobstore.Record) { cancel(); <-wctx.Done() })
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Watch = %v", err)
			}
		case <-time.After(storetest.Timeout):
			t.Fatal("Watch did not return")
		}
		recs, err := s.List(ctx, jobstore.Filter{Limit: 1})
		if err != nil || len(recs) != 1 {
			t.Fatalf("List(limit 1) = %d records, %v", len(recs), err)
		}
	}
}

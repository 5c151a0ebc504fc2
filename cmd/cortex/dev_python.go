package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/cortex-os/core/internal/sandbox"
	"github.com/cortex-os/core/internal/sandbox/pyworker"
)

// startCodePython runs a job.code.python worker for cortex dev when the
// sandbox works on this machine, and says so; when it does not, it says
// why. The returned function waits until the worker has stopped (ctx ended).
func startCodePython(ctx context.Context, out io.Writer, url string, log *slog.Logger, auth bool) (wait func()) {
	noop := func() {}
	if auth {
		fmt.Fprintln(out, "  code:        no job.code.python worker with --auth: run cortex-worker-python as a worker user (docs/code-python.md)")
		return noop
	}
	sb, err := sandbox.New(sandbox.Config{Logger: log})
	if err == nil {
		err = sb.Probe(ctx)
	}
	if err != nil {
		fmt.Fprintf(out, "  code:        no job.code.python worker: %v (docs/code-python.md)\n", err)
		return noop
	}
	fmt.Fprintf(out, "  code:        job.code.python runs Python in a sandbox: ./bin/cortex submit --nats-url %s --topic job.code.python --payload 'print(42)' --wait\n", url)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := pyworker.Run(ctx, pyworker.Options{NatsURL: url, Sandbox: sb, Logger: log, Direct: true}); err != nil {
			log.Error("stopped", "component", "worker", "kind", "code-python", "err", err)
		}
	}()
	return func() { <-done }
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/sandbox"
	"github.com/cortex-os/core/internal/sandbox/pyworker"
)

// startCodePython runs a job.code.python worker for cortex dev when the
// sandbox works on this machine, and says so; when it does not, it says
// why. Its series go to reg, if set. The returned function waits until the worker has stopped (ctx ended).
//
// With roles (dev --auth) the worker connects as its own user, code-python-1,
// and names itself in its subjects as every worker then must.
func startCodePython(ctx context.Context, out io.Writer, url string, log *slog.Logger, roles *embeddednats.DevAuth, reg prometheus.Registerer) (wait func()) {
	noop := func() {}
	opts := pyworker.Options{NatsURL: url, Logger: log, Direct: true, Metrics: reg}
	if roles != nil {
		creds, err := roles.Code.Credentials().Options()
		if err != nil {
			fmt.Fprintf(out, "  code:        no job.code.python worker: %v\n", err)
			return noop
		}
		opts.NatsOptions, opts.ID, opts.NamedSubjects = creds, roles.Code.User, true
	}
	sb, err := sandbox.New(sandbox.Config{Logger: log})
	if err == nil {
		err = sb.Probe(ctx)
	}
	if err != nil {
		fmt.Fprintf(out, "  code:        no job.code.python worker: %v (docs/code-python.md)\n", err)
		return noop
	}
	if roles == nil {
		fmt.Fprintf(out, "  code:        job.code.python runs Python in a sandbox: ./bin/cortex submit --nats-url %s --topic job.code.python --payload 'print(42)' --wait\n", url)
	} else {
		fmt.Fprintf(out, "  code:        job.code.python runs Python in a sandbox (worker %s): submit with the client's credentials, --topic job.code.python --input script.py --wait\n", roles.Code.User)
	}
	opts.Sandbox = sb
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := pyworker.Run(ctx, opts); err != nil {
			log.Error("stopped", "component", "worker", "kind", "code-python", "err", err)
		}
	}()
	return func() { <-done }
}

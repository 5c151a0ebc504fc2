// Command worker is a CortexOS worker written outside the CortexOS module,
// against its public SDK only: it takes jobs on job.outside and completes
// each with outside://<job_id>/<PAYLOAD>. It prints "ready <worker_id>"
// once it takes jobs, and stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cortex-os/core/pkg/client"
	"github.com/cortex-os/core/pkg/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	nc, err := client.Dial(os.Getenv("NATS_URL"), client.Options{Name: "outside-worker"})
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := worker.New(nc, worker.Config{
		Kind:     "outside",
		Capacity: 4,
		Labels:   map[string]string{"built": "outside"},
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			return worker.Result{Ptr: "outside://" + job.ID() + "/" + strings.ToUpper(string(job.Payload()))}, nil
		}),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-w.Ready():
		fmt.Println("ready", w.ID())
	case err := <-done:
		return err
	}
	return <-done
}

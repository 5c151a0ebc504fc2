package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/cortex-os/core/pkg/worker"
)

// Ready closes once Run has subscribed and the server has the
// subscriptions: a job published from another connection right after it
// reaches the worker.
func TestReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ready")
	w, err := worker.New(e.workerBus.Conn(), worker.Config{Kind: "ready", Handler: worker.HandlerFunc(echoHandler), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Ready():
		t.Fatal("Ready before Run")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-w.Ready():
	case <-time.After(waitFor):
		t.Fatal("not Ready after Run started")
	}
	e.send(t, "right-after-ready")
	if res := e.results.waitResult(t, "right-after-ready").GetJobResult(); res.GetWorkerId() != w.ID() {
		t.Errorf("result %v", res)
	}
}

package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/natstest"
)

// --kill-node and --restart-node reach a running dev cluster through any of
// its nodes and stop and start the node named.
func TestDevClusterNodeControl(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	stop, err := serveDevNodeControl(c.Cluster, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	n1 := c.Node(1)
	run := func(kill, restart int) (string, error) {
		var out bytes.Buffer
		f := &devClusterFlags{killNode: kill, restartNode: restart}
		handled, err := f.control(&out, "127.0.0.1", n1.Port)
		if !handled {
			t.Fatal("control not handled")
		}
		return out.String(), err
	}
	if out, err := run(2, 0); err != nil || !strings.Contains(out, "node 2") || c.Node(2).Running() {
		t.Fatalf("kill 2: %q, %v; running %v", out, err, c.Node(2).Running())
	}
	if out, err := run(2, 0); err != nil || !strings.Contains(out, "already stopped") {
		t.Fatalf("kill 2 again: %q, %v", out, err)
	}
	if out, err := run(0, 2); err != nil || !(strings.Contains(out, "started again") || strings.Contains(out, "already running")) || !c.Node(2).Running() {
		t.Fatalf("restart 2: %q, %v", out, err)
	}
	if _, err := run(9, 0); err == nil || !strings.Contains(err.Error(), "no node") {
		t.Fatalf("kill 9: %v, want no node", err)
	}
	var out bytes.Buffer
	if handled, err := (&devClusterFlags{killNode: 1, restartNode: 1}).control(&out, "127.0.0.1", n1.Port); !handled || err == nil {
		t.Fatalf("both flags: handled %v, %v", handled, err)
	}
}

package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/natstest"
)

// An R3 bucket on the cluster keeps its data when the node leading it
// stops, and the node comes back on the same port.
func TestClusterSurvivesLeaderNode(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "R3", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "kept"); err != nil {
		t.Fatal(err)
	}
	lead := c.StreamLeader(ctx, js, "KV_R3")
	if lead == 0 {
		t.Fatal("no stream leader")
	}
	c.Node(lead).Stop()
	var e jetstream.KeyValueEntry
	for e == nil && ctx.Err() == nil {
		// Each try bounded: a request sent as the node went down is
		// never answered.
		gctx, gcancel := context.WithTimeout(ctx, time.Second)
		if e, err = kv.Get(gctx, "k"); err != nil {
			time.Sleep(50 * time.Millisecond)
		}
		gcancel()
	}
	if e == nil || string(e.Value()) != "kept" {
		t.Fatalf("after stopping node %d: %v, %v", lead, e, err)
	}
	if err := c.Node(lead).Start(); err != nil {
		t.Fatal(err)
	}
}

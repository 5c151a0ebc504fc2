package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/natstest"
)

// A partitioned node's clients stay connected to it but cannot write an R3
// bucket (no quorum on their side); the majority writes on; after Heal the
// node's clients read what the majority wrote.
func TestPartitionCutsANodeOff(t *testing.T) {
	t.Parallel()
	c := natstest.RunPartitionableCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	connect := func(url string) jetstream.JetStream {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.DontRandomize())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		return js
	}
	major, minor := connect(c.Node(1).URL()), connect(c.Node(3).URL())
	kv, err := major.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "PART", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	kvMinor, err := minor.KeyValue(ctx, "PART")
	if err != nil {
		t.Fatal(err)
	}
	c.Partition(3)
	// The majority writes on (a stream leader on node 3 is replaced first).
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err := kv.PutString(pctx, "k", "majority")
		pcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the majority could not write: %v", err)
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = kvMinor.PutString(pctx, "k", "minority")
	pcancel()
	if err == nil {
		t.Fatal("a write through the partitioned node succeeded")
	}
	c.Heal(3)
	for {
		gctx, gcancel := context.WithTimeout(ctx, time.Second)
		e, err := kvMinor.Get(gctx, "k")
		gcancel()
		if err == nil && string(e.Value()) == "majority" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after Heal the node's client reads %v, %v", e, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

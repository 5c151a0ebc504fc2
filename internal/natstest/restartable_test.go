package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/natstest"
)

// A restarted server is the same server: the same URL, the JetStream data
// kept, and a client that stayed connected through the outage reconnects.
func TestRestartableKeepsPortAndData(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	url := srv.URL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "restart"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "kept"); err != nil {
		t.Fatal(err)
	}

	srv.Restart(t, 50*time.Millisecond)
	if srv.URL() != url {
		t.Errorf("URL after the restart %s, want %s", srv.URL(), url)
	}
	// The client reconnects by itself; its next request waits for that.
	var e jetstream.KeyValueEntry
	for e == nil && ctx.Err() == nil {
		if e, err = kv.Get(ctx, "k"); err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if e == nil || string(e.Value()) != "kept" {
		t.Fatalf("after the restart: %v, %v; want the value kept", e, err)
	}
	if nc.Stats().Reconnects < 1 {
		t.Errorf("the client did not reconnect")
	}

	srv.Shutdown()
	srv.Shutdown() // twice is harmless
	srv.Start(t)
	nc2, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect after Shutdown and Start: %v", err)
	}
	nc2.Close()
}

package natstest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/embeddednats"
)

// Cluster is an in-process cluster of NATS servers with clustered
// JetStream, on loopback, for tests: nodes stop and start again on the same
// ports and data (Node(i).Stop, Node(i).Start).
type Cluster struct {
	*embeddednats.Cluster
}

// RunCluster starts size servers (3 when 0) routed to each other, JetStream
// in t.TempDir(), and waits until JetStream takes an R-size stream. When
// the test ends, after the cleanups registered later, it stops them all.
func RunCluster(t testing.TB, size int) *Cluster {
	t.Helper()
	if size <= 0 {
		size = 3
	}
	c, err := embeddednats.StartCluster(embeddednats.ClusterConfig{
		Base: embeddednats.Config{Port: -1, StoreDir: t.TempDir(), ReadyTimeout: 10 * time.Second},
		Size: size, ClusterPort: -1, Name: "test",
	})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(c.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitJetStream(ctx, c.URLs(), size); err != nil {
		t.Fatalf("natstest: cluster JetStream: %v", err)
	}
	return &Cluster{c}
}

// WaitJetStream waits until the servers at urls take (and delete) a stream
// of the given replicas: the cluster has its meta leader and its peers.
func WaitJetStream(ctx context.Context, urls string, replicas int) error {
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("NATSTEST_PROBE_%d", time.Now().UnixNano())
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(rctx, jetstream.StreamConfig{Name: name, Subjects: []string{"natstest.probe." + name}, Replicas: replicas, Storage: jetstream.MemoryStorage})
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return js.DeleteStream(dctx, name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StreamLeader returns the 1-based index of the node leading stream, or 0.
func (c *Cluster) StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) int {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return 0
	}
	for _, n := range c.Nodes {
		if n.Name == info.Cluster.Leader {
			return n.Index
		}
	}
	return 0
}

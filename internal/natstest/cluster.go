package natstest

import (
	"context"
	"testing"
	"time"

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

// WaitJetStream is embeddednats.WaitJetStream.
func WaitJetStream(ctx context.Context, urls string, replicas int) error {
	return embeddednats.WaitJetStream(ctx, urls, replicas)
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

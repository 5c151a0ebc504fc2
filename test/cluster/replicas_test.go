package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/system"
)

// On a three-node cluster the scheduler's store defaults to R3, and
// streams an earlier version made with one replica are raised to three.
func TestStreamsDefaultToR3AndAreRaised(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := newRig(t, rigConfig{}).c
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := bus.Connect(bus.Config{URL: c.URLs(), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := bus.DefaultReplicas(b.Conn(), 0); got != 3 {
		t.Fatalf("default replicas on a 3-node cluster: %d, want 3", got)
	}
	// As an earlier version left them: one replica each.
	if _, _, _, err := system.OpenStoreReplicas(ctx, b, config.StoreJetStream, 1); err != nil {
		t.Fatal(err)
	}
	js, _ := b.JetStream()
	replicas := func(name string) int {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return info.Config.Replicas
	}
	for _, s := range []string{"KV_CORTEX_JOBS", "CORTEX_DLQ"} {
		if got := replicas(s); got != 1 {
			t.Fatalf("%s: %d replicas, want 1 to start with", s, got)
		}
	}
	if _, _, _, err := system.OpenStoreReplicas(ctx, b, config.StoreJetStream, 0); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"KV_CORTEX_JOBS", "CORTEX_DLQ"} {
		if got := replicas(s); got != 3 {
			t.Errorf("%s: %d replicas after the scheduler opened it again, want 3", s, got)
		}
	}
}

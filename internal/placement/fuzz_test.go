package placement_test

import (
	"testing"

	"github.com/cortex-os/core/internal/placement"
)

// FuzzParseConfig: any bytes give a config or an error, never a panic; a
// config that parses and validates builds its pools.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("default_strategy: least-loaded\n"))
	f.Add([]byte("pools:\n  - name: gpu\n    topics: [job.gpu.>]\n    capabilities: [gpu]\n    labels: {region: eu}\n    max_pending: 10\ntenants:\n  - name: acme\n    weight: 2\n    max_concurrent: 3\n"))
	f.Add([]byte("pools: [{name: x, topics: ['job.*', 'job.>']}]\n"))
	f.Add([]byte("aging_step: -1s\n"))
	f.Add([]byte("{{{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := placement.ParseConfig(data)
		if err != nil {
			return
		}
		if cfg.Validate() != nil {
			return
		}
		if _, err := placement.NewPools(cfg); err != nil {
			t.Fatalf("a config that validates does not build: %v", err)
		}
	})
}

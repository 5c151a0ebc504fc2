package placement_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := placement.ParseConfig([]byte(`
default_strategy: naive
aging_step: 45s
max_pending_total: 5000
pools:
  - name: gpu
    topics: ["job.llm.>", "job.vision.*"]
    strategy: least-loaded
    capabilities: [gpu]
    labels: {region: eu}
    max_pending: 1000
    tenant_max_pending: 100
tenants:
  - {name: acme, weight: 2, max_concurrent: 10, max_pending: 1000}
default_tenant: {max_concurrent: 50}
`))
	if err != nil {
		t.Fatal(err)
	}
	pools := mustPools(t, cfg)
	gpu, ok := pools.Pool("gpu")
	if !ok || gpu.MaxPending != 1000 || gpu.TenantMaxPending != 100 || gpu.Labels["region"] != "eu" || gpu.Placer() != (placement.LeastLoaded{}) {
		t.Errorf("pool gpu = %+v", gpu)
	}
	if pools.AgingStep() != 45*time.Second || pools.Config().MaxPendingTotal != 5000 || pools.Config().DefaultMaxPending != placement.DefaultMaxPending {
		t.Errorf("config = %+v", pools.Config())
	}
	if a := pools.Tenant("acme"); a.Weight != 2 || a.MaxConcurrent != 10 || a.MaxPending != 1000 {
		t.Errorf("tenant acme = %+v", a)
	}
	if d := pools.Tenant("someone"); d.Name != "someone" || d.Weight != 1 || d.MaxConcurrent != 50 {
		t.Errorf("a tenant not listed = %+v", d)
	}
	for topic, want := range map[string]string{
		"job.llm.chat":        "gpu",
		"job.llm.chat.stream": "gpu",
		"job.vision.ocr":      "gpu",
		"job.vision.ocr.x":    "job.vision.ocr.x",
		"job.llm":             "job.llm",
		"job.echo":            "job.echo",
	} {
		p := pools.Resolve(topic)
		if p.Name != want {
			t.Errorf("Resolve(%s) = %s, want %s", topic, p.Name, want)
		}
		if implicit := want != "gpu"; p.Implicit() != implicit || (implicit && p.Placer() != (placement.Naive{})) {
			t.Errorf("Resolve(%s): implicit %v, strategy %v", topic, p.Implicit(), p.Placer())
		}
	}
	if _, err := placement.ParseConfig([]byte("pools:\n  - name: x\n    topic: job.x\n")); err == nil || !strings.Contains(err.Error(), "topic") {
		t.Errorf("an unknown field: %v", err)
	}
	if c, err := placement.ParseConfig(nil); err != nil || len(c.Pools) != 0 {
		t.Errorf("empty config: %+v, %v", c, err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := placement.Pool{Name: "p", Topics: []string{"job.x"}}
	for _, tc := range []struct {
		name string
		cfg  placement.Config
		want []string
	}{
		{"no name", placement.Config{Pools: []placement.Pool{{Topics: []string{"job.x"}}}}, []string{"pools[0]: name is required"}},
		{"dotted name", placement.Config{Pools: []placement.Pool{{Name: "a.b", Topics: []string{"job.x"}}}}, []string{`pool "a.b": name may hold only`}},
		{"twice", placement.Config{Pools: []placement.Pool{ok, ok}}, []string{`pool "p": defined twice`}},
		{"no topics", placement.Config{Pools: []placement.Pool{{Name: "p"}}}, []string{`pool "p": topics: at least one`}},
		{"bad topic", placement.Config{Pools: []placement.Pool{{Name: "p", Topics: []string{"job..x", "job.>.x", "job.a*"}}}}, []string{"empty token", `">" must be the last`, "whole token"}},
		{"strategy", placement.Config{Pools: []placement.Pool{{Name: "p", Topics: []string{"job.x"}, Strategy: "random"}}}, []string{`strategy "random": unknown (known: `, "least-loaded", "naive"}},
		{"default strategy", placement.Config{DefaultStrategy: "fifo"}, []string{`default_strategy "fifo": unknown strategy`}},
		{"negatives", placement.Config{AgingStep: -time.Second, DefaultMaxPending: -1, MaxPendingTotal: -1,
			Pools: []placement.Pool{{Name: "p", Topics: []string{"job.x"}, MaxPending: -1, TenantMaxPending: -2}}},
			[]string{"aging_step -1s", "default_max_pending -1", "max_pending_total -1", "max_pending -1", "tenant_max_pending -2"}},
		{"requirements", placement.Config{Pools: []placement.Pool{{Name: "p", Topics: []string{"job.x"}, Capabilities: []string{""}, Labels: map[string]string{"": "x"}}}},
			[]string{"an empty capability", "an empty key"}},
		{"tenants", placement.Config{Tenants: []placement.Tenant{{Weight: 1}, {Name: "a", Weight: -1, MaxConcurrent: -1, MaxPending: -1}, {Name: "a"}}},
			[]string{"tenants[0]: name is required", `tenant "a": weight -1`, `tenant "a": max_concurrent -1`, `tenant "a": max_pending -1`, `tenant "a": defined twice`}},
		{"default tenant", placement.Config{DefaultTenant: placement.Tenant{Weight: -2}}, []string{"default_tenant: weight -2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %v\nwant it to say %q", err, w)
				}
			}
			if _, err := placement.NewPools(tc.cfg); err == nil {
				t.Error("NewPools accepted it")
			}
		})
	}
	if err := (&placement.Config{Pools: []placement.Pool{ok}, Tenants: []placement.Tenant{{Name: "a"}}}).Validate(); err != nil {
		t.Errorf("a valid config: %v", err)
	}
}

func TestMatchSubject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, subject string
		want             bool
	}{
		{"job.echo", "job.echo", true},
		{"job.echo", "job.echo.x", false},
		{"job.*", "job.echo", true},
		{"job.*", "job.echo.x", false},
		{"job.>", "job.echo.x", true},
		{"job.>", "job", false},
		{"job.*.x", "job.a.x", true},
		{"job.*.x", "job.a.y", false},
		{"*.echo", "job.echo", true},
		{">", "job.echo", true},
		{"job.echo", "job", false},
	} {
		if got := placement.MatchSubject(tc.pattern, tc.subject); got != tc.want {
			t.Errorf("MatchSubject(%q, %q) = %v", tc.pattern, tc.subject, got)
		}
	}
}

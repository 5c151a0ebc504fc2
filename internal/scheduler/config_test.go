package scheduler_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/scheduler"
)

func requiredConfig() scheduler.Config {
	return scheduler.Config{
		Bus:      &fakeBus{},
		Safety:   &recordingSafety{},
		Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(),
	}
}

func TestConfigWithDefaultsIsACopy(t *testing.T) {
	t.Parallel()
	cfg := requiredConfig()
	cfg.AckTimeout = 7 * time.Second
	d := cfg.WithDefaults()
	if cfg.Store != nil || cfg.ID != "" || cfg.Tick != 0 {
		t.Errorf("WithDefaults changed its receiver: %+v", cfg)
	}
	if d.AckTimeout != 7*time.Second {
		t.Errorf("AckTimeout = %v, want the value set", d.AckTimeout)
	}
	for name, got := range map[string][2]time.Duration{
		"LeaseInterval":   {d.LeaseInterval, scheduler.DefaultLeaseInterval},
		"Timeout":         {d.Timeout, scheduler.DefaultTimeout},
		"TTL":             {d.TTL, scheduler.DefaultTTL},
		"RetryBackoff":    {d.RetryBackoff, scheduler.DefaultRetryBackoff},
		"RetryBackoffMax": {d.RetryBackoffMax, scheduler.DefaultRetryBackoffMax},
		"NoWorkerRetry":   {d.NoWorkerRetry, scheduler.DefaultNoWorkerRetry},
		"Tick":            {d.Tick, scheduler.DefaultTick},
		"FollowTTL":       {d.FollowTTL, scheduler.DefaultFollowTTL},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %v, want %v", name, got[0], got[1])
		}
	}
	if d.LeaseMisses != scheduler.DefaultLeaseMisses || d.MaxAttempts != scheduler.DefaultMaxAttempts || d.MaxFollows != scheduler.DefaultMaxFollows {
		t.Errorf("LeaseMisses, MaxAttempts, MaxFollows = %d, %d, %d", d.LeaseMisses, d.MaxAttempts, d.MaxFollows)
	}
	if d.Store == nil || d.DeadLetters == nil || d.Logger == nil || d.ID == "" || d.QueueGroup != scheduler.DefaultQueueGroup {
		t.Errorf("defaults missing: %+v", d)
	}
	if d.DocumentWorkers != scheduler.DefaultDocumentWorkers || d.SafetyUnavailable != scheduler.DefaultSafetyUnavailable {
		t.Errorf("modes = %q, %q", d.DocumentWorkers, d.SafetyUnavailable)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Validate of the defaults: %v", err)
	}
	cfg.RequireWorkerIdentity = true
	if got := cfg.WithDefaults().DocumentWorkers; got != scheduler.DocumentWorkersRefuse {
		t.Errorf("DocumentWorkers with RequireWorkerIdentity = %q, want refuse", got)
	}
}

func TestConfigValidateRefusesBadValues(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		change func(*scheduler.Config)
		want   string
	}{
		"no bus":                   {func(c *scheduler.Config) { c.Bus = nil }, "Config.Bus is required"},
		"no safety":                {func(c *scheduler.Config) { c.Safety = nil }, "Config.Safety is required"},
		"no registry":              {func(c *scheduler.Config) { c.Registry = nil }, "Config.Registry is required"},
		"no strategy":              {func(c *scheduler.Config) { c.Strategy = nil }, "Config.Strategy is required"},
		"negative timeout":         {func(c *scheduler.Config) { c.Timeout = -time.Minute }, "Timeout"},
		"negative backoff max":     {func(c *scheduler.Config) { c.RetryBackoffMax = -time.Second }, "RetryBackoffMax"},
		"negative no-worker retry": {func(c *scheduler.Config) { c.NoWorkerRetry = -time.Millisecond }, "NoWorkerRetry"},
		"id with a blank":          {func(c *scheduler.Config) { c.ID = "a b" }, "Config.ID"},
		"id too long":              {func(c *scheduler.Config) { c.ID = strings.Repeat("x", 4096) }, "Config.ID"},
		"negative ack timeout":     {func(c *scheduler.Config) { c.AckTimeout = -time.Second }, "AckTimeout"},
		"negative tick":            {func(c *scheduler.Config) { c.Tick = -1 }, "Tick"},
		"negative lease misses":    {func(c *scheduler.Config) { c.LeaseMisses = -1 }, "LeaseMisses"},
		"negative max attempts":    {func(c *scheduler.Config) { c.MaxAttempts = -2 }, "MaxAttempts"},
		"negative backoff":         {func(c *scheduler.Config) { c.RetryBackoff = -time.Millisecond }, "RetryBackoff"},
		"unknown document mode":    {func(c *scheduler.Config) { c.DocumentWorkers = "maybe" }, "DocumentWorkers"},
		"unknown safety mode":      {func(c *scheduler.Config) { c.SafetyUnavailable = "allow" }, "SafetyUnavailable"},
		"id with a wildcard":       {func(c *scheduler.Config) { c.ID = "a*b" }, "Config.ID"},
		"negative lease interval":  {func(c *scheduler.Config) { c.LeaseInterval = -time.Second }, "LeaseInterval"},
		"negative follow ttl":      {func(c *scheduler.Config) { c.FollowTTL = -time.Second }, "FollowTTL"},
		"negative max follows":     {func(c *scheduler.Config) { c.MaxFollows = -1 }, "MaxFollows"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := requiredConfig()
			tc.change(&cfg)
			err := cfg.WithDefaults().Validate()
			if !errors.Is(err, scheduler.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig naming %s", err, tc.want)
			}
			if _, err := scheduler.New(cfg); !errors.Is(err, scheduler.ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestConfigNegativeTTLMeansNone(t *testing.T) {
	t.Parallel()
	cfg := requiredConfig()
	cfg.TTL = -1
	d := cfg.WithDefaults()
	if d.TTL != -1 {
		t.Fatalf("TTL = %v, want -1 kept", d.TTL)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := (scheduler.Config{}).Validate(); !errors.Is(err, scheduler.ErrInvalidConfig) {
		t.Fatalf("Validate of the zero Config = %v", err)
	}
}

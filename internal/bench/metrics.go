package bench

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/scheduler"
)

// benchMetrics is the system's Prometheus metrics during a bench with
// Options.Metrics: what a scheduler and workers run with --metrics-addr
// do, with the registry gathered every ScrapeInterval as a scraper would.
type benchMetrics struct {
	reg *prometheus.Registry
	sch *metrics.Scheduler
}

// ScrapeInterval is how often a bench with Options.Metrics gathers the
// registry, as Prometheus would scrape it (more often than its 15s default).
const ScrapeInterval = time.Second

func newBenchMetrics(on bool) *benchMetrics {
	if !on {
		return nil
	}
	reg := metrics.NewRegistry()
	return &benchMetrics{reg: reg, sch: metrics.NewScheduler(reg)}
}

func (m *benchMetrics) observer() scheduler.Observer {
	if m == nil {
		return nil
	}
	return m.sch
}

func (m *benchMetrics) registerer() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.reg
}

// start attaches the engine and gathers until the parts stop.
func (m *benchMetrics) start(p *parts, engine *scheduler.Engine, sb *bus.NatsBus, dead scheduler.DeadLetters) {
	if m == nil {
		return
	}
	m.sch.Attach(engine, sb.Stats, dead)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(ScrapeInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_, _ = m.reg.Gather()
			}
		}
	}()
	p.stop = append(p.stop, func() error { close(done); <-stopped; return nil })
}

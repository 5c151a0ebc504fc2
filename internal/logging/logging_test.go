package logging_test

import (
	"strings"
	"testing"

	"log/slog"

	"github.com/cortex-os/core/internal/logging"
)

func TestDevPrefixes(t *testing.T) {
	t.Parallel()
	var buf logging.Buffer
	log := logging.NewDev(&buf, slog.LevelDebug)
	log.With("component", "scheduler").Info("started", "id", "s1")
	log.With("component", "scheduler.dispatch").Debug("dispatched", "job_id", "j1")
	log.With("component", "safety").Info("job blocked", "job_id", "j2")
	log.With("component", "worker", "kind", "echo").Info("running")
	log.Info("job store", "component", "scheduler")
	log.Info("no component")
	log.With("component", "scheduler").WithGroup("g").Info("grouped", "component", "other")
	want := []string{
		`msg="[SCHEDULER] started" component=scheduler id=s1`,
		`msg="[SCHEDULER] dispatched" component=scheduler.dispatch job_id=j1`,
		`msg="[SAFETY] job blocked" component=safety job_id=j2`,
		`msg="[WORKER echo] running" component=worker kind=echo`,
		`msg="[SCHEDULER] job store" component=scheduler`,
		`msg="no component"`,
		`msg="[SCHEDULER] grouped" component=scheduler g.component=other`,
	}
	out := buf.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("missing %s in\n%s", w, out)
		}
	}
}

func TestPlainLoggerHasNoPrefix(t *testing.T) {
	t.Parallel()
	var buf logging.Buffer
	logging.New(&buf, slog.LevelInfo).With("component", "scheduler").Info("started")
	if out := buf.String(); !strings.Contains(out, `msg=started component=scheduler`) {
		t.Errorf("got %s", out)
	}
}

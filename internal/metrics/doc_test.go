package metrics_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

var (
	yamlBlock  = regexp.MustCompile("(?s)```yaml\n(.*?)```")
	seriesName = regexp.MustCompile(`\bcortex_[a-z0-9_]+`)
)

// TestObservabilityDoc checks docs/observability.md against a running
// system: its YAML blocks parse (the alert rules have an expr each), every
// cortex_ series the page names is one the system serves, and every one it
// serves is on the page.
func TestObservabilityDoc(t *testing.T) {
	data, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	blocks := yamlBlock.FindAllStringSubmatch(doc, -1)
	if len(blocks) < 2 {
		t.Fatalf("%d yaml blocks, want the scrape config and the alert rules at least", len(blocks))
	}
	var rules int
	for i, b := range blocks {
		var v map[string]any
		if err := yaml.Unmarshal([]byte(b[1]), &v); err != nil {
			t.Errorf("yaml block %d does not parse: %v", i, err)
			continue
		}
		var file struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		_ = yaml.Unmarshal([]byte(b[1]), &file)
		for _, g := range file.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
					t.Errorf("a rule with no alert or no expr: %+v", r)
				}
				if !seriesName.MatchString(r.Expr) {
					t.Errorf("rule %s names no cortex_ series", r.Alert)
				}
				rules++
			}
		}
	}
	if rules < 3 {
		t.Errorf("%d alert rules, want 3", rules)
	}

	served := servedSeries(t)
	named := map[string]bool{}
	for _, n := range seriesName.FindAllString(doc, -1) {
		named[n] = true
		base := n
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && served[b] {
				base = b
			}
		}
		if !served[base] {
			t.Errorf("the page names %s, which the system does not serve", n)
		}
	}
	for n := range served {
		if !named[n] {
			t.Errorf("the system serves %s, which the page does not name", n)
		}
	}
}

// servedSeries runs a scheduler, a worker and a gateway sharing a
// registry, sends a job that completes and one that is denied and a request
// to the gateway, and returns the names of the cortex_ families served.
func servedSeries(t *testing.T) map[string]bool {
	r := startRig(t)
	r.runWorker(t, "echo", func(_ context.Context, j *worker.Job) (worker.Result, error) {
		return worker.Result{Ptr: "memory://echo/" + j.ID()}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	systest.Eventually(t, 10*time.Second, "the worker known", func() bool { return value(t, r.reg, "cortex_workers", map[string]string{"pool": "default"}) == 1 })
	job, err := r.client.Submit(ctx, &pb.JobRequest{Topic: "job.echo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Wait(ctx, job.GetJobId()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Submit(ctx, &pb.JobRequest{Topic: "job.forbidden"}); !errors.Is(err, client.ErrDenied) {
		t.Fatalf("forbidden job: %v", err)
	}
	// The gateway's series, counting a request.
	gw, err := gateway.New(gateway.Config{Client: r.client, Metrics: r.reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	fams, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "cortex_") {
			out[f.GetName()] = true
		}
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	slices.Sort(names)
	t.Logf("served: %s", strings.Join(names, " "))
	return out
}

package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/metrics"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func TestMountServesMetricsBesideTheRoutes(t *testing.T) {
	reg := metrics.NewRegistry()
	metrics.NewSafetyDecisions(reg).Record(&pb.SafetyVerdict{Decision: pb.PolicyDecision_POLICY_DECISION_DENY, RuleId: "r1"})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("route " + r.URL.Path)) })
	srv := httptest.NewServer(metrics.Mount(next, reg))
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return b.String()
	}
	if body := get("/metrics"); !strings.Contains(body, `cortex_safety_decisions_total{decision="deny",rule="r1"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics:\n%s", body)
	}
	if body := get("/v1/jobs"); body != "route /v1/jobs" {
		t.Errorf("/v1/jobs went to %q", body)
	}
	var _ prometheus.Gatherer = reg
}

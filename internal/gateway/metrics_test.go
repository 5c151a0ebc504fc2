package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/internal/tracing"
)

// listen serves rg's gateway on a loopback listener with cfg until the
// test ends, and returns its URL.
func (rg *rig) listen(t *testing.T, cfg gateway.ListenConfig) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	ln, err := rg.srv.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ln.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	return ln.URL()
}

// GET /metrics serves the listener's registry: the gateway's own series
// (by route pattern, not path) beside whatever else is registered, to an
// administrator's key with no tenant only; a listener given no registry
// answers 404.
func TestMetricsRoute(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	rg := start(t, gateway.Config{Metrics: reg})
	rg.want(t, 201, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"quick-m1"}`)
	rg.want(t, 200, "GET", "/v1/jobs/quick-m1", "key-admin", "")
	rg.want(t, 404, "GET", "/v1/jobs/no-such-job", "key-admin", "")
	rg.want(t, 404, "GET", "/no/such/route", "", "")

	// The httptest server has no ListenConfig: no metrics there.
	rg.want(t, 404, "GET", "/metrics", "key-admin", "")

	base := rg.listen(t, gateway.ListenConfig{Metrics: reg})
	get := func(key string) (int, string) {
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := get(""); code != 401 {
		t.Errorf("no key: %d, want 401", code)
	}
	if code, _ := get("key-a-viewer"); code != 403 {
		t.Errorf("a viewer's key: %d, want 403", code)
	}
	code, body := get("key-admin")
	if code != 200 {
		t.Fatalf("the admin's key: %d %s", code, body)
	}
	for _, want := range []string{
		`cortex_gateway_requests_total{code="201",route="POST /v1/jobs"} 1`,
		`cortex_gateway_requests_total{code="200",route="GET /v1/jobs/{id}"} 1`,
		`cortex_gateway_requests_total{code="404",route="GET /v1/jobs/{id}"} 1`,
		`cortex_gateway_requests_total{code="404",route="unmatched"} 1`,
		`cortex_gateway_requests_total{code="401",route="GET /metrics"} 1`,
		`cortex_gateway_requests_total{code="403",route="GET /metrics"} 1`,
		`cortex_gateway_request_seconds_count{route="POST /v1/jobs"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "no-such-job") || strings.Contains(body, "quick-m1") {
		t.Error("a job id is in a label")
	}

	// Without keys (loopback), anyone may read them.
	noKeys, err := gateway.New(gateway.Config{Client: rg.env.Client(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	base = (&rig{srv: noKeys}).listen(t, gateway.ListenConfig{Metrics: reg})
	if code, body := get(""); code != 200 || !strings.Contains(body, "cortex_gateway_requests_total") {
		t.Errorf("no keys: %d %s", code, body)
	}
}

// A job submitted over HTTP with a W3C traceparent is in the caller's
// trace: its trace_id is the caller's trace id, and the submit span is a
// child of the caller's span.
func TestSubmitJoinsTheCallersTrace(t *testing.T) {
	// Not parallel: the tracer provider is the process's.
	exp := tracetest.NewInMemoryExporter()
	tracing.Use(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	t.Cleanup(tracing.Off)
	rg := start(t, gateway.Config{})

	const (
		traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanHex  = "00f067aa0ba902b7"
	)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", rg.url+"/v1/jobs", strings.NewReader(`{"topic":"job.gw","job_id":"quick-traced"}`))
	req.Header.Set("Authorization", "Bearer key-admin")
	req.Header.Set("X-Request-Id", "req-traced") // the traceparent wins
	req.Header.Set("traceparent", "00-"+traceHex+"-"+spanHex+"-01")
	res, err := rg.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("submit: %d %s", res.StatusCode, body)
	}
	want, _ := trace.TraceIDFromHex(traceHex)
	if !strings.Contains(string(body), `"trace_id":"`+tracing.JobTraceID(want)+`"`) {
		t.Errorf("the job's trace_id is not the caller's trace id %s: %s", tracing.JobTraceID(want), body)
	}
	parent, _ := trace.SpanIDFromHex(spanHex)
	var submit *tracetest.SpanStub
	systest.Poll(t, waitFor, 10*time.Millisecond, "a submit span in trace "+want.String(), func() (bool, string) {
		for _, s := range exp.GetSpans() {
			if s.Name == tracing.SpanSubmit && s.SpanContext.TraceID() == want {
				submit = &s
			}
		}
		return submit != nil, ""
	})
	if submit.Parent.SpanID() != parent || !submit.Parent.IsRemote() {
		t.Errorf("the submit span's parent is %s (remote %v), want the caller's %s", submit.Parent.SpanID(), submit.Parent.IsRemote(), parent)
	}

	// Without a traceparent the request id stays the trace id.
	r := rg.want(t, 201, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"quick-untraced"}`)
	if j := r.json(t); j["trace_id"] == tracing.JobTraceID(want) || j["trace_id"] == "" {
		t.Errorf("a job without a traceparent: trace_id %v", j["trace_id"])
	}
}

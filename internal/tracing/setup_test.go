package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/cortex-os/core/internal/tracing"
)

// TestSetupExportsWithOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set, Setup
// exports spans with OTLP/HTTP to <endpoint>/v1/traces; without it, it
// sets nothing up.
func TestSetupExportsWithOTLP(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tracing.Off()
	shutdown, err := tracing.Setup(context.Background(), "test", nil)
	if err != nil || tracing.Enabled() {
		t.Fatalf("without an endpoint: enabled=%v err=%v", tracing.Enabled(), err)
	}
	_ = shutdown(context.Background())

	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	shutdown, err = tracing.Setup(context.Background(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tracing.Off()
	if !tracing.Enabled() {
		t.Fatal("Setup with an endpoint did not turn tracing on")
	}
	_, span := tracing.Tracer().Start(context.Background(), "probe")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Fatal("no OTLP/HTTP export reached the endpoint")
	}
}

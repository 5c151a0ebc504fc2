package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/metrics"
)

// httpMetrics are the gateway's own series, registered with
// Config.Metrics: requests by route pattern and status, and how long they
// took. The route label is the pattern the request matched ("GET
// /v1/jobs/{id}", never the path itself), or "unmatched": its values are
// the route table's, bounded.
type httpMetrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	// streams are the patterns of the event streams, whose length is the
	// caller's: counted, not timed.
	streams map[string]bool
}

// routeUnmatched labels a request no route matched (a 404 or 405).
const routeUnmatched = "unmatched"

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "gateway", Name: "requests_total",
			Help: "HTTP requests the gateway answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "gateway", Name: "request_seconds",
			Help:    "Time the gateway took to answer a request, by route pattern (event streams not included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		streams: map[string]bool{},
	}
	for _, rt := range routeTable() {
		if rt.Stream {
			m.streams[rt.Method+" "+rt.Path] = true
		}
	}
	for _, c := range []prometheus.Collector{m.requests, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("%w: metrics: %v", ErrInvalidConfig, err)
		}
	}
	return m, nil
}

// observe counts a request that matched pattern ("" none).
func (m *httpMetrics) observe(pattern string, code int, took time.Duration) {
	if m == nil {
		return
	}
	if pattern == "" || pattern == "/" {
		pattern = routeUnmatched
	}
	m.requests.WithLabelValues(pattern, strconv.Itoa(code)).Inc()
	if !m.streams[pattern] {
		m.seconds.WithLabelValues(pattern).Observe(took.Seconds())
	}
}

// serveMetrics is GET /metrics: ListenConfig.Metrics's series, in the
// Prometheus text format (OpenMetrics when asked). They count every
// tenant's jobs, so with API keys it needs an administrator's key bound to
// no tenant; without keys (loopback) anyone who reaches it may read them.
// A listener without ListenConfig.Metrics answers 404.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, c caller) {
	h := s.metricsHandler.Load()
	if h == nil {
		s.fail(w, r, errorf(http.StatusNotFound, codeNotFound, "", "this gateway serves no metrics here (cortex gateway serves its own on --metrics-addr)"))
		return
	}
	if c.principal.Restricted() {
		s.fail(w, r, errorf(http.StatusForbidden, codePermissionDenied, "", "key %s is bound to a tenant; the metrics count every tenant's jobs: use an administrator's key with no tenant", c.id))
		return
	}
	(*h).ServeHTTP(w, r)
}

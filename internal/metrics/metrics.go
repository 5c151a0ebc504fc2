// Package metrics exposes CortexOS's Prometheus metrics: a registry with the
// Go runtime and process collectors, its HTTP handler, a server for a
// --metrics-addr flag, and the scheduler's and safety service's series.
// What each series means is in docs/observability.md.
//
// Counters the engine already keeps (its Stats) and gauges of its state are
// read when the registry is scraped, not per job; what must be counted as
// it happens (jobs finished by state, queue wait and run time, safety
// decisions) comes through the engine's Observer hook, with prometheus's
// atomic counters and histograms.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every CortexOS series.
const Namespace = "cortex"

// Path is where the metrics are served.
const Path = "/metrics"

// NewRegistry returns a registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves g's metrics in the Prometheus text (or OpenMetrics)
// format. Mount it at Path: mux.Handle(metrics.Path, metrics.Handler(reg)).
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Server serves Handler(g) at Path on its own listener (a --metrics-addr).
type Server struct {
	srv *http.Server
	ln  net.Listener
	err chan error
}

// Listen binds addr ("127.0.0.1:9090", ":0") and serves g's metrics at Path
// until Close.
func Listen(addr string, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle(Path, Handler(g))
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, err: make(chan error, 1)}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.err <- err
	}()
	log.Info("metrics served", "addr", "http://"+ln.Addr().String()+Path)
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving, waiting up to a second for scrapes in progress.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.err; err == nil {
		err = serr
	}
	return err
}

// ListenIf is Listen when addr is not empty; otherwise it returns a nil
// server, whose Close does nothing.
func ListenIf(addr string, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if addr == "" {
		return nil, nil
	}
	return Listen(addr, g, log)
}

// CloseIf closes s if it is not nil.
func CloseIf(s *Server) error {
	if s == nil {
		return nil
	}
	return s.Close()
}

// ServeFlag is what a --metrics-addr flag does: with addr empty it returns
// a nil Registerer (nothing is counted) and a stop that does nothing;
// otherwise a registry with the runtime collectors, served at addr's Path
// until stop.
func ServeFlag(addr string, log *slog.Logger) (reg prometheus.Registerer, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	r := NewRegistry()
	srv, err := Listen(addr, r, log)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return r, func() { _ = srv.Close() }, nil
}

// FlagUsage is the --metrics-addr flag's help.
const FlagUsage = `serve Prometheus metrics at http://ADDR/metrics ("127.0.0.1:9464", ":0"; default: none)`

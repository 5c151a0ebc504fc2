package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/metrics"
)

// Listener bounds. The write side has no timeout, as an event stream lasts
// up to MaxStream; each handler has its own (Config.RequestTimeout).
const (
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes a kept-alive connection with no request.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes = 64 << 10
	// DefaultShutdownGrace is how long Run lets the requests in hand finish
	// once asked to stop; event streams are ended at once.
	DefaultShutdownGrace = 10 * time.Second
)

// ErrExposed: a gateway without API keys asked to listen beyond loopback.
var ErrExposed = errors.New("gateway: no API keys, and the address is not loopback")

// ListenConfig is where and how a Server listens.
type ListenConfig struct {
	// Addr is host:port; port 0 picks a free one.
	Addr string
	// TLSCert and TLSKey are PEM files: both, to serve HTTPS.
	TLSCert, TLSKey string
	// InsecureNoAuth lets a server without keys listen on an address that
	// is not loopback: every caller who reaches it is an administrator.
	InsecureNoAuth bool
	// ShutdownGrace bounds the wait for requests in hand on stop. Default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// Metrics, if set, is served at GET /metrics (internal/metrics's
	// handler): with API keys, to an administrator's key with no tenant;
	// without, to anyone who reaches the address (loopback, unless
	// InsecureNoAuth). Unset, GET /metrics is 404. The handler is the
	// Server's: a Listen given a registry sets it for all its listeners.
	Metrics prometheus.Gatherer
}

// CheckExposure is the rule a gateway listens by: without keys, only on a
// loopback address, unless insecure (--insecure-no-auth) says otherwise.
func CheckExposure(addr string, keys *Keys, insecure bool) error {
	if keys != nil || insecure || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s would let anyone who reaches it act as an administrator; give API keys (--api-keys), listen on 127.0.0.1, or pass --insecure-no-auth", ErrExposed, addr)
}

// Listener is a Server bound to its address.
type Listener struct {
	srv   *Server
	http  *http.Server
	ln    net.Listener
	tls   bool
	grace time.Duration
}

// Listen checks the exposure rule, binds cfg.Addr and returns the listener;
// Run serves on it.
func (s *Server) Listen(cfg ListenConfig) (*Listener, error) {
	if err := CheckExposure(cfg.Addr, s.cfg.Keys, cfg.InsecureNoAuth); err != nil {
		return nil, err
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, fmt.Errorf("%w: give both a TLS certificate and its key, or neither", ErrInvalidConfig)
	}
	l := &Listener{srv: s, grace: cfg.ShutdownGrace}
	if cfg.Metrics != nil {
		h := metrics.Handler(cfg.Metrics)
		s.metricsHandler.Store(&h)
	}
	if l.grace <= 0 {
		l.grace = DefaultShutdownGrace
	}
	l.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%w: TLS: %v", ErrInvalidConfig, err)
		}
		l.http.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		l.tls = true
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen: %w", err)
	}
	l.ln = ln
	return l, nil
}

// Addr is the address listened on (with the port picked for port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// URL is the base URL of the API: http(s)://host:port.
func (l *Listener) URL() string {
	scheme := "http"
	if l.tls {
		scheme = "https"
	}
	return scheme + "://" + l.ln.Addr().String()
}

// Run serves until ctx ends, then stops: it takes no new connection, ends
// the event streams, lets the other requests in hand finish within the
// grace period, and returns. A listener that fails is its error.
func (l *Listener) Run(ctx context.Context) error {
	errs := make(chan error, 1)
	go func() {
		var err error
		if l.tls {
			err = l.http.ServeTLS(l.ln, "", "")
		} else {
			err = l.http.Serve(l.ln)
		}
		errs <- err
	}()
	select {
	case err := <-errs:
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	l.srv.closeStreams()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.grace)
	defer cancel()
	err := l.http.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		_ = l.http.Close()
		err = fmt.Errorf("gateway: requests still running after %s were cut", l.grace)
	}
	if serr := <-errs; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

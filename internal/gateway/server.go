package gateway

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/pkg/client"
)

// Bounds and defaults.
const (
	// MaxBodyBytes bounds a request body (1 MiB): a larger one is 413.
	MaxBodyBytes = 1 << 20
	// DefaultRequestTimeout bounds a handler (not an event stream).
	DefaultRequestTimeout = 10 * time.Second
	// DefaultMaxStream bounds an event stream.
	DefaultMaxStream = time.Hour
	// maxRequestID bounds an X-Request-Id taken from the caller.
	maxRequestID = 128
)

// Config configures a Server.
type Config struct {
	// Client asks the schedulers. Required. The gateway acts on every
	// tenant through it (its NATS user needs the administrator's
	// permissions, docs/security.md) and holds each key to its tenant.
	Client *client.Client
	// Keys are the API keys accepted. Nil: no authentication, every caller
	// is an administrator (cmd/cortex serves that on loopback only).
	Keys *Keys
	// Policy is what POST /v1/policy/eval and GET /v1/policy use; nil: the
	// shipped default policy.
	Policy *safety.Policy
	// Logger receives the access log (debug per request, info for errors).
	// Default slog.Default().
	Logger *slog.Logger
	// RequestTimeout bounds each handler but the event stream. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxStream bounds an event stream. Default DefaultMaxStream.
	MaxStream time.Duration
	// CORSOrigin, when set, is the origin allowed to call the API from a
	// browser ("*" any). Default: no CORS headers.
	CORSOrigin string
	// RateLimit is the requests per second each key may make (a token
	// bucket with a burst of twice that, at least 1); 0 no limit. Without
	// keys, one bucket is shared by all callers.
	RateLimit float64
	// Metrics, if set, gets the gateway's own series: requests by route
	// and status, and their latency (metrics.go; docs/observability.md).
	Metrics prometheus.Registerer
}

// ErrInvalidConfig: a Config that cannot make a Server.
var ErrInvalidConfig = errors.New("gateway: invalid config")

func (c *Config) setDefaults() error {
	if c.Client == nil {
		return fmt.Errorf("%w: a client is required", ErrInvalidConfig)
	}
	if c.RequestTimeout < 0 || c.MaxStream < 0 || c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		return fmt.Errorf("%w: timeouts and the rate limit must not be negative", ErrInvalidConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxStream == 0 {
		c.MaxStream = DefaultMaxStream
	}
	return nil
}

// Server is the HTTP gateway. It is an http.Handler.
type Server struct {
	cfg    Config
	log    *slog.Logger
	kernel *safety.Kernel
	mux    *http.ServeMux
	// openapiDoc is OpenAPI(), encoded once.
	openapiDoc []byte

	// httpm counts the requests (nil without Config.Metrics);
	// metricsHandler serves GET /metrics (nil: 404; ListenConfig.Metrics).
	httpm          *httpMetrics
	metricsHandler atomic.Pointer[http.Handler]

	limitMu  sync.Mutex
	limiters map[string]*rate.Limiter

	// closing is closed when the listener stops: event streams end.
	closing   chan struct{}
	closeOnce sync.Once
}

// closeStreams ends the event streams (the listener is stopping).
func (s *Server) closeStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// New validates cfg and returns its server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	k, err := safety.New(safety.Config{Policy: cfg.Policy, Logger: cfg.Logger, InstanceID: "cortex-gateway"})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentGateway), kernel: k, mux: http.NewServeMux(), limiters: map[string]*rate.Limiter{}, closing: make(chan struct{}), openapiDoc: mustJSON(OpenAPI())}
	if cfg.Metrics != nil {
		if s.httpm, err = newHTTPMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.mountDashboard()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, errorf(http.StatusNotFound, codeNotFound, "", "no route %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-Id")
	if !validRequestID(rid) {
		rid = uuid.NewString()
	}
	w.Header().Set("X-Request-Id", rid)
	if s.cors(w, r) {
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	start := time.Now()
	req := r.WithContext(context.WithValue(r.Context(), requestIDKey{}, rid))
	s.mux.ServeHTTP(rec, req) // sets req.Pattern: the route matched
	s.httpm.observe(req.Pattern, rec.code(), time.Since(start))
	level := slog.LevelDebug
	if rec.status >= 400 {
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "request", "request_id", rid, "method", r.Method, "path", r.URL.Path,
		"status", rec.code(), "bytes", rec.bytes, "duration", time.Since(start), "key", rec.key, "remote", r.RemoteAddr)
}

type requestIDKey struct{}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

// cors sets the CORS headers when an origin is configured, and answers a
// preflight (true: answered).
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if s.cfg.CORSOrigin == "" || origin == "" || (s.cfg.CORSOrigin != "*" && origin != s.cfg.CORSOrigin) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id, traceparent, tracestate")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// statusRecorder remembers the status and size of a response, and the key
// that made the request, for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
	key    string
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

func (r *statusRecorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// Flush lets an event stream through.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the writer underneath.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// caller is who makes a request: its tenancy principal and role.
type caller struct {
	id        string
	principal tenancy.Principal
	role      Role
}

// wrap applies what every route shares: authentication, the role check,
// the rate limit, the body cap and the handler's timeout.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := caller{id: "anonymous", role: RoleAdmin}
		if rt.Role != 0 && s.cfg.Keys != nil {
			token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			k, found := s.cfg.Keys.lookup(strings.TrimSpace(token))
			if !ok || !found {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cortex"`)
				s.fail(w, r, errorf(http.StatusUnauthorized, codeUnauthenticated, "", "an API key is required: Authorization: Bearer <key>"))
				return
			}
			c = caller{id: k.principal.Identity, principal: k.principal, role: k.role}
			if rec, ok := w.(*statusRecorder); ok {
				rec.key = c.id
			}
			if k.role < rt.Role {
				s.fail(w, r, errorf(http.StatusForbidden, codePermissionDenied, "", "key %s has role %s; %s %s needs %s", c.id, k.role, rt.Method, rt.Path, rt.Role))
				return
			}
		}
		if rt.Role != 0 && !s.allow(c.id) {
			w.Header().Set("Retry-After", "1")
			s.fail(w, r, errorf(http.StatusTooManyRequests, codeRateLimited, "", "key %s is over its rate limit of %g requests per second", c.id, s.cfg.RateLimit))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.bodyLimit(rt, r))
		}
		limit := s.cfg.RequestTimeout
		if rt.Stream {
			limit = s.cfg.MaxStream
		}
		ctx, cancel := context.WithTimeout(r.Context(), limit)
		defer cancel()
		if rt.Stream {
			go func() {
				select {
				case <-s.closing:
					cancel()
				case <-ctx.Done():
				}
			}()
		}
		rt.handle(s, w, r.WithContext(ctx), c)
	})
}

// allow takes a token from the key's bucket.
func (s *Server) allow(id string) bool {
	if s.cfg.RateLimit <= 0 {
		return true
	}
	s.limitMu.Lock()
	l, ok := s.limiters[id]
	if !ok {
		l = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), max(1, int(2*s.cfg.RateLimit)))
		s.limiters[id] = l
	}
	s.limitMu.Unlock()
	return l.Allow()
}

// ---- responses ----

// Error codes of the error body.
const (
	codeInvalid          = "invalid_argument"
	codeUnauthenticated  = "unauthenticated"
	codePermissionDenied = "permission_denied"
	codeNotFound         = "not_found"
	codeConflict         = "conflict"
	codeTooLarge         = "payload_too_large"
	codeRateLimited      = "rate_limited"
	codeThrottled        = "throttled"
	codeUnavailable      = "unavailable"
	codeTimeout          = "timeout"
	codeInternal         = "internal"
)

// apiError is an error as the API answers it: {"error": {...}}.
type apiError struct {
	status     int
	Code       string `json:"code"`
	Message    string `json:"message"`
	Field      string `json:"field,omitempty"`
	retryAfter time.Duration
}

func (e *apiError) Error() string { return e.Message }

func errorf(status int, code, field, format string, args ...any) *apiError {
	return &apiError{status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// fail writes e (an *apiError, or another error mapped by errorOf).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := errorOf(err)
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int64(math.Ceil(e.retryAfter.Seconds()))))
	}
	if e.status >= 500 {
		s.log.Info("request failed", "request_id", r.Context().Value(requestIDKey{}), "path", r.URL.Path, "status", e.status, "err", e.Message)
	}
	writeJSON(w, r, e.status, map[string]*apiError{"error": e})
}

// errorOf maps a client error to the API's.
func errorOf(err error) *apiError {
	var e *apiError
	if errors.As(err, &e) {
		return e
	}
	var refused *client.RefusedError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		if tooBig.Limit == MaxBodyBytes {
			return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "", "request body exceeds %d bytes (1 MiB), the bound of a JSON body; "+
				"send a larger input as the raw body of POST /v1/jobs (Content-Type: application/octet-stream, the job's fields in the query; docs/api.md)", MaxBodyBytes)
		}
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "", "request body exceeds %d bytes, the blob store's cap on an input", tooBig.Limit)
	case errors.Is(err, tenancy.ErrTenantNotAllowed):
		return errorf(http.StatusForbidden, codePermissionDenied, "tenant", "%v", err)
	case errors.Is(err, client.ErrThrottled) && errors.As(err, &refused):
		e := errorf(http.StatusTooManyRequests, codeThrottled, "", "%s", refused.Error())
		e.retryAfter = max(refused.RetryAfter, time.Second)
		return e
	case errors.Is(err, client.ErrNotFound):
		return errorf(http.StatusNotFound, codeNotFound, "", "%s", reasonOf(err))
	case errors.Is(err, client.ErrConflict):
		return errorf(http.StatusConflict, codeConflict, "", "%s", reasonOf(err))
	case errors.Is(err, client.ErrInvalid):
		msg := reasonOf(err)
		return errorf(http.StatusBadRequest, codeInvalid, fieldOf(msg), "%s", msg)
	case errors.Is(err, client.ErrNoScheduler):
		return errorf(http.StatusServiceUnavailable, codeUnavailable, "", "no scheduler is answering")
	case errors.Is(err, context.DeadlineExceeded):
		e := errorf(http.StatusServiceUnavailable, codeUnavailable, "", "no answer from a scheduler in time")
		e.retryAfter = time.Second
		return e
	case errors.As(err, &refused) && refused.Retryable:
		e := errorf(http.StatusServiceUnavailable, codeUnavailable, "", "%s", refused.Reason)
		e.retryAfter = max(refused.RetryAfter, time.Second)
		return e
	case errors.As(err, &refused):
		return errorf(http.StatusBadRequest, codeInvalid, fieldOf(refused.Reason), "%s", refused.Reason)
	}
	return errorf(http.StatusInternalServerError, codeInternal, "", "%v", err)
}

func reasonOf(err error) string {
	var refused *client.RefusedError
	if errors.As(err, &refused) {
		return refused.Reason
	}
	return err.Error()
}

// fieldOf reads the field a scheduler's "invalid <field>: ..." names.
func fieldOf(msg string) string {
	i := strings.Index(msg, "invalid ")
	if i < 0 {
		return ""
	}
	rest := msg[i+len("invalid "):]
	j := strings.Index(rest, ": ")
	if j <= 0 || strings.ContainsAny(rest[:j], " ") {
		return ""
	}
	return wireToAPIField(rest[:j])
}

// wireToAPIField names a JobRequest field as the API's body does.
func wireToAPIField(f string) string {
	switch f {
	case "env_vars":
		return "env"
	case "payload":
		return "input"
	}
	return f
}

// writeJSON writes v with status, gzipped when the caller accepts it.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		w.WriteHeader(status)
		gz := gzip.NewWriter(w)
		_ = json.NewEncoder(gz).Encode(v)
		_ = gz.Close()
		return
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(name) == "gzip" && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// IsLoopback reports whether addr (host:port) listens on a loopback
// address only: what a gateway without API keys is allowed.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

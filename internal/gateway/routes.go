package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// route is one endpoint: the mux and the OpenAPI document are both built
// from routes().
type route struct {
	Method, Path string
	// Role the caller needs; 0: public (no key).
	Role Role
	// Stream: a Server-Sent Events stream (no handler timeout but MaxStream).
	Stream bool
	// StreamDoc describes a stream's body in OpenAPI ("": the job's events).
	StreamDoc string
	OpID      string
	Summary   string
	// Body names the request body's schema ("" none); Response the 2xx
	// body's; Status is the success status.
	Body, Response string
	Status         int
	// Errors are the error statuses the route answers.
	Errors []int
	// Query parameters.
	Query []string
	// RawBody: the route also takes an application/octet-stream body (a
	// job's input, up to the blob store's cap; blobs.go).
	RawBody bool
	// RawResponse: the 2xx body is bytes (application/octet-stream).
	RawResponse bool
	// TextResponse: the 2xx body is text (the Prometheus text format).
	TextResponse bool
	handle       func(s *Server, w http.ResponseWriter, r *http.Request, c caller)
}

func (s *Server) routes() []route { return routeTable() }

var (
	authErrors = []int{401, 403, 429}
	jobErrors  = []int{401, 403, 404, 429, 503}
)

// routeTable is every endpoint.
func routeTable() []route {
	return append([]route{
		{Method: "GET", Path: "/healthz", OpID: "health", Summary: "The gateway is up", Response: "Health", Status: 200, handle: (*Server).health},
		{Method: "GET", Path: "/readyz", OpID: "ready", Summary: "NATS is connected and a scheduler answers", Response: "Health", Status: 200, Errors: []int{503}, handle: (*Server).ready},
		{Method: "GET", Path: "/metrics", Role: RoleAdmin, OpID: "metrics", Summary: "Prometheus metrics (the text format; OpenMetrics when asked): served where the listener is given a registry (cortex dev), else 404; with API keys, an administrator's key with no tenant",
			Status: 200, TextResponse: true, Errors: []int{401, 403, 404, 429}, handle: (*Server).serveMetrics},
		{Method: "GET", Path: "/openapi.json", OpID: "openapi", Summary: "This API's OpenAPI 3 document", Response: "", Status: 200, handle: (*Server).openapi},
		{Method: "POST", Path: "/v1/jobs", Role: RoleSubmitter, OpID: "submitJob", Summary: "Submit a job: a JSON body (up to 1 MiB), or the input as a raw application/octet-stream body (up to the blob store's cap) with the job's fields in the query",
			Body: "SubmitJob", Response: "Job", Status: 201, RawBody: true, Query: rawQuery,
			Errors: []int{400, 401, 403, 409, 413, 429, 503}, handle: (*Server).submit},
		{Method: "GET", Path: "/v1/jobs", Role: RoleViewer, OpID: "listJobs", Summary: "List jobs, newest first, a page at a time", Response: "JobList", Status: 200,
			Query: []string{"state", "topic", "tenant", "limit", "page_token"}, Errors: []int{400, 401, 403, 429, 503}, handle: (*Server).list},
		{Method: "GET", Path: "/v1/jobs/{id}", Role: RoleViewer, OpID: "getJob", Summary: "Get a job", Response: "Job", Status: 200, Errors: jobErrors, handle: (*Server).get},
		{Method: "POST", Path: "/v1/jobs/{id}/cancel", Role: RoleSubmitter, OpID: "cancelJob", Summary: "Cancel a job that has not ended", Body: "CancelJob", Response: "Job", Status: 200,
			Errors: []int{400, 401, 403, 404, 409, 413, 429, 503}, handle: (*Server).cancel},
		{Method: "GET", Path: "/v1/jobs/{id}/result", Role: RoleViewer, OpID: "getJobResult", Summary: "A completed job's result bytes (204: completed without a result; 409: not ended; 422: ended without a result, or a result_ptr the gateway cannot read)",
			Status: 200, RawResponse: true, Errors: []int{401, 403, 404, 409, 422, 429, 502, 503}, handle: (*Server).result},
		{Method: "GET", Path: "/v1/jobs/{id}/events", Role: RoleViewer, Stream: true, OpID: "jobEvents", Summary: "Server-Sent Events: the job at each change, to its end", Response: "Job", Status: 200,
			Errors: jobErrors, handle: (*Server).events},
		{Method: "GET", Path: "/v1/workers", Role: RoleViewer, OpID: "listWorkers", Summary: "The live workers", Response: "WorkerList", Status: 200, Errors: []int{401, 403, 429, 503}, handle: (*Server).workers},
		{Method: "GET", Path: "/v1/dlq", Role: RoleViewer, OpID: "listDeadLetters", Summary: "The dead-letter queue, oldest first", Response: "JobList", Status: 200,
			Query: []string{"limit"}, Errors: []int{400, 401, 403, 429, 503}, handle: (*Server).dlq},
		{Method: "POST", Path: "/v1/dlq/{id}/retry", Role: RoleAdmin, OpID: "retryDeadLetter", Summary: "Run a dead letter's request again as a new job", Response: "Job", Status: 201,
			Errors: []int{401, 403, 404, 429, 503}, handle: (*Server).retry},
		{Method: "POST", Path: "/v1/policy/eval", Role: RoleSubmitter, OpID: "evalPolicy", Summary: "What the gateway's policy decides about a job", Body: "SubmitJob", Response: "PolicyDecision", Status: 200,
			Errors: []int{400, 401, 403, 413, 429}, handle: (*Server).evalPolicy},
		{Method: "GET", Path: "/v1/policy", Role: RoleViewer, OpID: "getPolicy", Summary: "The gateway's policy: version and rules", Response: "Policy", Status: 200, Errors: authErrors, handle: (*Server).policy},
	}, dashboardRoutes()...)
}

// ---- health ----

func (s *Server) health(w http.ResponseWriter, r *http.Request, _ caller) {
	writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request, _ caller) {
	if !s.cfg.Client.Conn().IsConnected() {
		writeJSON(w, r, http.StatusServiceUnavailable, map[string]string{"status": "NATS is not connected"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.cfg.Client.Workers(ctx); err != nil {
		writeJSON(w, r, http.StatusServiceUnavailable, map[string]string{"status": "no scheduler is answering: " + err.Error()})
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

// ---- jobs ----

func (s *Server) submit(w http.ResponseWriter, r *http.Request, c caller) {
	var (
		req  *pb.JobRequest
		opts []client.SubmitOption
		err  error
	)
	if isRaw(r) {
		var input []byte
		if req, input, err = rawSubmit(r); err != nil {
			s.fail(w, r, err)
			return
		}
		opts = append(opts, client.WithInput(input))
	} else {
		if len(r.URL.RawQuery) > 0 {
			s.fail(w, r, errorf(http.StatusBadRequest, codeInvalid, "", "query parameters go with a raw body (Content-Type: application/octet-stream) only; a JSON body has the job's fields"))
			return
		}
		data, err := readBody(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if req, err = DecodeSubmit(data); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if req.Tenant, err = c.principal.SubmitTenant(req.Tenant); err != nil {
		s.fail(w, r, err)
		return
	}
	// A caller's W3C traceparent (and tracestate) puts the job in the
	// caller's trace: its trace_id is the caller's trace id and its submit
	// span a child of the caller's span. Without one, the request id is the
	// job's trace id.
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if rid, _ := r.Context().Value(requestIDKey{}).(string); rid != "" && validRequestID(rid) {
			opts = append(opts, client.WithTraceID(rid))
		}
	}
	job, err := s.cfg.Client.Submit(ctx, req, opts...)
	var refused *client.RefusedError
	if errors.Is(err, client.ErrDenied) && errors.As(err, &refused) && refused.Job != nil {
		writeJSON(w, r, http.StatusCreated, JobOf(refused.Job)) // recorded DENIED
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusCreated, JobOf(job))
}

// visibleJob gets a job the caller may see: another tenant's job is, to
// it, a job that does not exist.
func (s *Server) visibleJob(ctx context.Context, c caller, id string) (*pb.JobInfo, error) {
	job, err := s.cfg.Client.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !c.principal.Sees(job.GetRequest().GetTenant()) {
		return nil, notFound(id)
	}
	return job, nil
}

func notFound(id string) error {
	return errorf(http.StatusNotFound, codeNotFound, "", "job %s: not found", id)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, c caller) {
	job, err := s.visibleJob(r.Context(), c, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, unknownAsNotFound(err, r.PathValue("id")))
		return
	}
	writeJSON(w, r, http.StatusOK, JobOf(job))
}

// unknownAsNotFound words a scheduler's not found as an invisible job's.
func unknownAsNotFound(err error, id string) error {
	if errors.Is(err, client.ErrNotFound) {
		return notFound(id)
	}
	return err
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	data, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var body CancelBody
	if len(data) > 0 {
		if err := decodeJSON(data, &body); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if _, err := s.visibleJob(r.Context(), c, id); err != nil {
		s.fail(w, r, unknownAsNotFound(err, id))
		return
	}
	job, err := s.cfg.Client.Cancel(r.Context(), id, body.Reason)
	if err != nil {
		s.fail(w, r, unknownAsNotFound(err, id))
		return
	}
	writeJSON(w, r, http.StatusOK, JobOf(job))
}

// JobList is a page of jobs.
type JobList struct {
	Jobs          []Job  `json:"jobs"`
	NextPageToken string `json:"next_page_token"`
}

func jobList(jobs []*pb.JobInfo, next string) JobList {
	out := JobList{Jobs: make([]Job, 0, len(jobs)), NextPageToken: next}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, JobOf(j))
	}
	return out
}

func queryLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000 {
		return 0, errorf(http.StatusBadRequest, codeInvalid, "limit", "limit %q: want 0 to 1000", v)
	}
	return n, nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, c caller) {
	q := r.URL.Query()
	opts := client.ListOptions{Topic: q.Get("topic"), Tenant: q.Get("tenant"), PageToken: q.Get("page_token")}
	var err error
	if opts.Limit, err = queryLimit(r); err != nil {
		s.fail(w, r, err)
		return
	}
	if st := q.Get("state"); st != "" {
		if opts.State, err = client.ParseState(st); err != nil {
			s.fail(w, r, errorf(http.StatusBadRequest, codeInvalid, "state", "state %q: want PENDING, DISPATCHED, RUNNING, COMPLETED, FAILED, DENIED, TIMEOUT or CANCELLED", st))
			return
		}
	}
	if c.principal.Restricted() {
		if opts.Tenant, err = c.principal.SubmitTenant(opts.Tenant); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	page, err := s.cfg.Client.List(r.Context(), opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	jobs := page.Jobs[:0:0]
	for _, j := range page.Jobs {
		if c.principal.Sees(j.GetRequest().GetTenant()) {
			jobs = append(jobs, j)
		}
	}
	writeJSON(w, r, http.StatusOK, jobList(jobs, page.NextPageToken))
}

// ---- events ----

func (s *Server) events(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	started := false
	flusher, _ := w.(http.Flusher)
	// Watch subscribes to the job's events before it reads the job, so no
	// change is missed, and yields the job as it is, then at each change.
	for job, err := range s.cfg.Client.Watch(ctx, id) {
		if err != nil {
			if !started {
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
					err = fmt.Errorf("%w", context.DeadlineExceeded)
				}
				s.fail(w, r, unknownAsNotFound(err, id))
				return
			}
			// The stream hit its bound, or the caller left: end it.
			_, _ = fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(map[string]*apiError{"error": errorOf(err)}))
			return
		}
		if !started {
			if !c.principal.Sees(job.GetRequest().GetTenant()) {
				s.fail(w, r, notFound(id))
				return
			}
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", mustJSON(JobOf(job))); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

// ---- workers, dead letters ----

// WorkerList is the live workers, as protojson renders cortex.v1.WorkerInfo.
type WorkerList struct {
	Workers []json.RawMessage `json:"workers"`
}

func (s *Server) workers(w http.ResponseWriter, r *http.Request, c caller) {
	ws, err := s.cfg.Client.Workers(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := WorkerList{Workers: make([]json.RawMessage, 0, len(ws))}
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for _, wi := range ws {
		if c.principal.Restricted() && wi.GetHeartbeat() != nil {
			// Held job ids are other tenants' business.
			wi = proto.Clone(wi).(*pb.WorkerInfo)
			wi.Heartbeat.Held = nil
		}
		b, err := opts.Marshal(wi)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Workers = append(out.Workers, b)
	}
	writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) dlq(w http.ResponseWriter, r *http.Request, c caller) {
	limit, err := queryLimit(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.cfg.Client.DeadLetters(r.Context(), client.ListOptions{Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	jobs := page.Jobs[:0:0]
	for _, j := range page.Jobs {
		if c.principal.Sees(j.GetRequest().GetTenant()) {
			jobs = append(jobs, j)
		}
	}
	writeJSON(w, r, http.StatusOK, jobList(jobs, ""))
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	if _, err := s.visibleJob(r.Context(), c, id); err != nil {
		s.fail(w, r, unknownAsNotFound(err, id))
		return
	}
	job, err := s.cfg.Client.RetryDeadLetter(r.Context(), id)
	if err != nil {
		s.fail(w, r, unknownAsNotFound(err, id))
		return
	}
	writeJSON(w, r, http.StatusCreated, JobOf(job))
}

// ---- policy ----

// PolicyDecision is what the policy decides about a job.
type PolicyDecision struct {
	Decision      string `json:"decision"`
	RuleID        string `json:"rule_id"`
	Reason        string `json:"reason"`
	PolicyVersion string `json:"policy_version"`
	RetryAfterMs  int64  `json:"retry_after_ms,omitempty"`
}

func (s *Server) evalPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	data, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := DecodeSubmit(data)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Tenant, err = c.principal.SubmitTenant(req.Tenant); err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.kernel.Check(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := PolicyDecision{Decision: v.Decision.String(), RuleID: v.RuleID, Reason: v.Reason, PolicyVersion: v.PolicyVersion}
	if v.RetryAfter > 0 {
		out.RetryAfterMs = v.RetryAfterMs()
	}
	writeJSON(w, r, http.StatusOK, out)
}

// Policy is the gateway's policy.
type Policy struct {
	Version string   `json:"version"`
	Default string   `json:"default"`
	Rules   []string `json:"rules"`
}

func (s *Server) policy(w http.ResponseWriter, r *http.Request, _ caller) {
	p := s.kernel.Policy()
	writeJSON(w, r, http.StatusOK, Policy{Version: p.Version, Default: p.Default.String(), Rules: p.RuleIDs()})
}

// RouteNames are the routes as "METHOD /path", as the mux has them.
func RouteNames() []string {
	var out []string
	for _, rt := range routeTable() {
		out = append(out, rt.Method+" "+rt.Path)
	}
	return out
}

package gateway

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cortex-os/core/internal/gateway/ui"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// The dashboard (internal/gateway/ui, docs/dashboard.md) is served at / and
// /ui/; these routes are the API additions it reads. They are in the route
// table like every other, so /openapi.json documents them.

// Overview bounds.
const (
	// DefaultOverviewWindow is the window of GET /v1/overview when the
	// caller names none: throughput and queue wait per minute over it.
	DefaultOverviewWindow = 15
	// MaxOverviewWindow is the longest window, in minutes.
	MaxOverviewWindow = 60
	// overviewScan bounds the recently written jobs an overview reads for
	// its window; overviewActive the jobs it counts per active state.
	overviewScan   = 2000
	overviewActive = 1000
	// overviewPages bounds the pages one listing reads (a page may be
	// short and still have a next one).
	overviewPages = 20
	// eventsPing is how often the event stream sends a comment, so that
	// proxies and the browser see it alive.
	eventsPing = 15 * time.Second
)

func dashboardRoutes() []route {
	return []route{
		{Method: "GET", Path: "/v1/me", Role: RoleViewer, OpID: "whoAmI", Summary: "The caller's key: id, role and tenant (what the dashboard may offer it)", Response: "Caller", Status: 200,
			Errors: authErrors, handle: (*Server).whoAmI},
		{Method: "GET", Path: "/v1/overview", Role: RoleViewer, OpID: "overview", Summary: "Jobs by state, throughput and queue wait per minute, pending by pool, workers and pools", Response: "Overview", Status: 200,
			Query: []string{"window_minutes"}, Errors: []int{400, 401, 403, 429, 503}, handle: (*Server).overview},
		{Method: "GET", Path: "/v1/events", Role: RoleViewer, Stream: true, StreamDoc: "A Server-Sent Events stream that does not end: one `data:` line per change of any job the key may see, the job as JSON (schema Job, without its input); `event: resync` when the gateway fell behind (list again; the stream then ends); a `:` comment every 15 seconds",
			OpID: "allEvents", Summary: "Server-Sent Events: every change of every job the key may see", Response: "Job", Status: 200,
			Errors: []int{401, 403, 429, 503}, handle: (*Server).allEvents},
		{Method: "GET", Path: "/v1/jobs/{id}/input", Role: RoleViewer, OpID: "getJobInput", Summary: "A job's input: the inline payload, or the pointer it was uploaded to", Response: "JobInput", Status: 200,
			Errors: jobErrors, handle: (*Server).jobInput},
	}
}

// mountDashboard serves the dashboard's page at / and its files under /ui/.
// They are public: they hold no data, which the page reads from the API
// with the key the user gives it.
func (s *Server) mountDashboard() {
	h := ui.Handler()
	s.mux.Handle("GET /{$}", h)
	s.mux.Handle("GET /ui/", h)
}

// ---- who am I ----

// Caller is who a key is, as the dashboard needs it.
type Caller struct {
	ID     string `json:"id"`
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	// AllTenants: the key sees and acts on every tenant's jobs.
	AllTenants bool `json:"all_tenants"`
	// Auth: the gateway asks for keys (false: every caller is an
	// administrator, on a loopback address).
	Auth bool `json:"auth"`
}

func (s *Server) whoAmI(w http.ResponseWriter, r *http.Request, c caller) {
	writeJSON(w, r, http.StatusOK, Caller{ID: c.id, Role: c.role.String(), Tenant: c.principal.Tenant,
		AllTenants: !c.principal.Restricted(), Auth: s.cfg.Keys != nil})
}

// ---- overview ----

// Overview is the state of the system as the dashboard's first page shows
// it. Counts are of the jobs the key may see.
type Overview struct {
	Now           string `json:"now"`
	WindowMinutes int    `json:"window_minutes"`
	// ByState counts the active jobs (PENDING, DISPATCHED, RUNNING) however
	// old, and the jobs that ended within the window, by state.
	ByState map[string]int `json:"by_state"`
	// Capped: a count reached its bound (1000 per active state, 2000 jobs
	// read for the window) and is a lower bound.
	Capped bool `json:"capped"`
	// Throughput and QueueWait are per minute over the window, oldest
	// first.
	Throughput []ThroughputBucket `json:"throughput"`
	QueueWait  []WaitBucket       `json:"queue_wait"`
	// PendingByPool counts PENDING jobs by pool ("" : the shared pool).
	PendingByPool map[string]int `json:"pending_by_pool"`
	Workers       WorkerSummary  `json:"workers"`
	Pools         []PoolSummary  `json:"pools"`
}

// ThroughputBucket is the jobs that ended in one minute.
type ThroughputBucket struct {
	Start     string `json:"start"`
	Completed int    `json:"completed"`
	// Failed counts FAILED and TIMEOUT; Other DENIED and CANCELLED.
	Failed int `json:"failed"`
	Other  int `json:"other"`
}

// WaitBucket is the queue wait (submission to first dispatch) of the jobs
// first dispatched in one minute.
type WaitBucket struct {
	Start string `json:"start"`
	Count int    `json:"count"`
	AvgMs int64  `json:"avg_ms"`
	MaxMs int64  `json:"max_ms"`
}

// WorkerSummary sums the live workers.
type WorkerSummary struct {
	Up       int `json:"up"`
	Draining int `json:"draining"`
	Capacity int `json:"capacity"`
	Used     int `json:"used"`
}

// PoolSummary is one pool: its workers, their slots, and its queue.
type PoolSummary struct {
	Pool     string `json:"pool"`
	Workers  int    `json:"workers"`
	Capacity int    `json:"capacity"`
	Used     int    `json:"used"`
	Pending  int    `json:"pending"`
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, c caller) {
	window := DefaultOverviewWindow
	if v := r.URL.Query().Get("window_minutes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxOverviewWindow {
			s.fail(w, r, errorf(http.StatusBadRequest, codeInvalid, "window_minutes", "window_minutes %q: want 1 to %d", v, MaxOverviewWindow))
			return
		}
		window = n
	}
	tenant := ""
	if c.principal.Restricted() {
		tenant = c.principal.Tenant
	}
	now := time.Now()
	out, err := s.buildOverview(r.Context(), c, tenant, now, window)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) buildOverview(ctx context.Context, c caller, tenant string, now time.Time, window int) (*Overview, error) {
	start := now.Truncate(time.Minute).Add(-time.Duration(window-1) * time.Minute)
	since := start.UnixMilli()
	out := &Overview{Now: now.UTC().Format(timeLayout), WindowMinutes: window, ByState: map[string]int{},
		PendingByPool: map[string]int{}, Throughput: make([]ThroughputBucket, window), QueueWait: make([]WaitBucket, window)}
	for i := range window {
		t := start.Add(time.Duration(i) * time.Minute).UTC().Format(timeLayout)
		out.Throughput[i].Start, out.QueueWait[i].Start = t, t
	}
	minute := func(ms int64) int {
		if ms < since {
			return -1
		}
		return min(int((ms-since)/time.Minute.Milliseconds()), window-1)
	}
	var waitSum = make([]int64, window)

	// The active jobs, however old, state by state.
	for _, st := range []pb.JobState{pb.JobState_JOB_STATE_PENDING, pb.JobState_JOB_STATE_DISPATCHED, pb.JobState_JOB_STATE_RUNNING} {
		n, capped, err := s.scan(ctx, client.ListOptions{State: st, Tenant: tenant}, overviewActive, func(j *pb.JobInfo) bool {
			if !c.principal.Sees(j.GetRequest().GetTenant()) {
				return true
			}
			if st == pb.JobState_JOB_STATE_PENDING {
				out.PendingByPool[j.GetPool()]++
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		out.ByState[client.StateName(st)] = n
		out.Capped = out.Capped || capped
	}
	// The jobs written within the window, newest written first.
	_, capped, err := s.scan(ctx, client.ListOptions{Tenant: tenant}, overviewScan, func(j *pb.JobInfo) bool {
		if j.GetUpdatedMs() < since {
			return false // older than the window: the rest are too
		}
		if !c.principal.Sees(j.GetRequest().GetTenant()) {
			return true
		}
		if client.IsTerminal(j.GetState()) {
			out.ByState[client.StateName(j.GetState())]++
			if i := minute(j.GetUpdatedMs()); i >= 0 {
				switch j.GetState() {
				case pb.JobState_JOB_STATE_COMPLETED:
					out.Throughput[i].Completed++
				case pb.JobState_JOB_STATE_FAILED, pb.JobState_JOB_STATE_TIMEOUT:
					out.Throughput[i].Failed++
				default:
					out.Throughput[i].Other++
				}
			}
		}
		// The wait of a first attempt: from submission to its dispatch.
		if j.GetAttempt() == 1 && j.GetAttemptStartedMs() > 0 {
			if i := minute(j.GetAttemptStartedMs()); i >= 0 {
				wait := max(0, j.GetAttemptStartedMs()-j.GetCreatedMs())
				b := &out.QueueWait[i]
				b.Count++
				waitSum[i] += wait
				b.MaxMs = max(b.MaxMs, wait)
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	out.Capped = out.Capped || capped
	for i := range out.QueueWait {
		if b := &out.QueueWait[i]; b.Count > 0 {
			b.AvgMs = waitSum[i] / int64(b.Count)
		}
	}

	ws, err := s.cfg.Client.Workers(ctx)
	if err != nil {
		return nil, err
	}
	pools := map[string]*PoolSummary{}
	pool := func(name string) *PoolSummary {
		if pools[name] == nil {
			pools[name] = &PoolSummary{Pool: name}
		}
		return pools[name]
	}
	for _, wi := range ws {
		hb := wi.GetHeartbeat()
		capacity := max(1, int(hb.GetCapacity()))
		out.Workers.Up++
		if hb.GetDraining() {
			out.Workers.Draining++
		}
		out.Workers.Capacity += capacity
		out.Workers.Used += int(wi.GetAssigned())
		p := pool(hb.GetPool())
		p.Workers++
		p.Capacity += capacity
		p.Used += int(wi.GetAssigned())
	}
	for name, n := range out.PendingByPool {
		pool(name).Pending = n
	}
	for _, p := range pools {
		out.Pools = append(out.Pools, *p)
	}
	sort.Slice(out.Pools, func(i, j int) bool { return out.Pools[i].Pool < out.Pools[j].Pool })
	if out.Pools == nil {
		out.Pools = []PoolSummary{}
	}
	return out, nil
}

// scan reads the jobs opts lists, page by page, handing each to each until
// it returns false, limit jobs were read, or the listing ends. It returns
// how many it read, and whether it stopped at limit with more to read.
func (s *Server) scan(ctx context.Context, opts client.ListOptions, limit int, each func(*pb.JobInfo) bool) (n int, capped bool, err error) {
	opts.Limit = 1000
	for range overviewPages {
		page, err := s.cfg.Client.List(ctx, opts)
		if err != nil {
			return n, false, err
		}
		for _, j := range page.Jobs {
			if n == limit {
				return n, true, nil
			}
			if !each(j) {
				return n, false, nil
			}
			n++
		}
		if page.NextPageToken == "" {
			return n, false, nil
		}
		opts.PageToken = page.NextPageToken
	}
	return n, true, nil
}

// ---- all events ----

func (s *Server) allEvents(w http.ResponseWriter, r *http.Request, c caller) {
	ctx := r.Context()
	evs, err := s.cfg.Client.AllEvents(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer evs.Stop()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(format string, args ...any) bool {
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !send("retry: 2000\n: connected\n\n") {
		return
	}
	ping := time.NewTicker(eventsPing)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			if evs.Dropped() {
				send("event: resync\ndata: {}\n\n")
				return
			}
			if !send(": ping\n\n") {
				return
			}
		case job := <-evs.C:
			if evs.Dropped() {
				// Fell behind: the reader lists again and reconnects.
				send("event: resync\ndata: {}\n\n")
				return
			}
			if !c.principal.Sees(job.GetRequest().GetTenant()) {
				continue
			}
			if !send("data: %s\n\n", mustJSON(JobOf(job))) {
				return
			}
		}
	}
}

// ---- input ----

// JobInput is a job's input: inline (Input when it is UTF-8 text, and
// InputBase64 always), or the pointer it was uploaded to.
type JobInput struct {
	JobID       string `json:"job_id"`
	Bytes       int    `json:"bytes"`
	Input       string `json:"input,omitempty"`
	InputBase64 string `json:"input_base64,omitempty"`
	ContextPtr  string `json:"context_ptr,omitempty"`
}

func (s *Server) jobInput(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	job, err := s.visibleJob(r.Context(), c, id)
	if err != nil {
		s.fail(w, r, unknownAsNotFound(err, id))
		return
	}
	req := job.GetRequest()
	out := JobInput{JobID: job.GetJobId(), Bytes: len(req.GetPayload()), ContextPtr: req.GetContextPtr()}
	if p := req.GetPayload(); len(p) > 0 {
		out.InputBase64 = base64.StdEncoding.EncodeToString(p)
		if utf8.Valid(p) {
			out.Input = string(p)
		}
	}
	writeJSON(w, r, http.StatusOK, out)
}

// dashboardSchemas are the schemas of the dashboard's routes' bodies.
func dashboardSchemas() map[string]any {
	counts := map[string]any{"type": "object", "additionalProperties": integer()}
	array := func(item map[string]any) map[string]any { return map[string]any{"type": "array", "items": item} }
	return map[string]any{
		"Caller": object(map[string]any{"id": str(), "role": map[string]any{"type": "string", "enum": []any{"viewer", "submitter", "admin"}},
			"tenant": str(), "all_tenants": boolean(), "auth": boolean()}, "id", "role"),
		"Overview": object(map[string]any{
			"now": str(), "window_minutes": integer(), "by_state": counts, "capped": boolean(),
			"throughput":      array(object(map[string]any{"start": str(), "completed": integer(), "failed": integer(), "other": integer()})),
			"queue_wait":      array(object(map[string]any{"start": str(), "count": integer(), "avg_ms": integer(), "max_ms": integer()})),
			"pending_by_pool": counts,
			"workers":         object(map[string]any{"up": integer(), "draining": integer(), "capacity": integer(), "used": integer()}),
			"pools":           array(object(map[string]any{"pool": str(), "workers": integer(), "capacity": integer(), "used": integer(), "pending": integer()})),
		}, "by_state", "throughput", "queue_wait", "workers", "pools"),
		"JobInput": object(map[string]any{"job_id": str(), "bytes": integer(), "input": str(),
			"input_base64": map[string]any{"type": "string", "format": "byte"}, "context_ptr": str()}, "job_id", "bytes"),
	}
}

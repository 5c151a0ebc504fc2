package gateway_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// waitFor bounds every wait; reaching it is a failure, not a timing.
const waitFor = 20 * time.Second

// The test keys: the key itself is its name.
var testKeys = []gateway.KeyConfig{
	{ID: "admin", SHA256: gateway.HashKey("key-admin"), Role: "admin"},
	{ID: "a-submitter", SHA256: gateway.HashKey("key-a"), Tenant: "a", Role: "submitter"},
	{ID: "b-submitter", SHA256: gateway.HashKey("key-b"), Tenant: "b", Role: "submitter"},
	{ID: "a-viewer", SHA256: gateway.HashKey("key-a-viewer"), Tenant: "a", Role: "viewer"},
}

// gatedHandler completes a job once its gate opens ("quick-..." need none).
type gatedHandler struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
}

func (g *gatedHandler) gate(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates == nil {
		g.gates = map[string]chan struct{}{}
	}
	if g.gates[id] == nil {
		g.gates[id] = make(chan struct{})
	}
	return g.gates[id]
}

func (g *gatedHandler) HandleJob(ctx context.Context, job *worker.Job) (worker.Result, error) {
	if !strings.HasPrefix(job.ID(), "quick-") {
		select {
		case <-g.gate(job.ID()):
		case <-ctx.Done():
			return worker.Result{}, ctx.Err()
		}
	}
	return worker.Result{Ptr: "memory://gw/" + job.ID()}, nil
}

type rig struct {
	url  string
	g    *gatedHandler
	env  *workertest.Env
	srv  *gateway.Server
	http *http.Client
}

// start runs NATS, a scheduler, a worker for job.gw and a gateway with the
// test keys (cfg's other fields as given).
func start(t *testing.T, cfg gateway.Config, opts ...workertest.Option) *rig {
	t.Helper()
	env := workertest.Start(t, opts...)
	g := &gatedHandler{}
	if _, err := env.RunWorker(worker.Config{Kind: "gw", Handler: g}); err != nil {
		t.Fatal(err)
	}
	cfg.Client = env.Client()
	if cfg.Keys == nil {
		keys, err := gateway.NewKeys(testKeys)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Keys = keys
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &rig{url: ts.URL, g: g, env: env, srv: srv, http: ts.Client()}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

func (r resp) errCode(t *testing.T) (code, field string) {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	c, _ := e["code"].(string)
	f, _ := e["field"].(string)
	return c, f
}

func (rg *rig) do(t *testing.T, method, path, key, body string) resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rg.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := rg.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (rg *rig) want(t *testing.T, status int, method, path, key, body string) resp {
	t.Helper()
	r := rg.do(t, method, path, key, body)
	if r.status != status {
		t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, status)
	}
	return r
}

// Every status code of the jobs resource, against a real scheduler.
func TestJobStatuses(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})

	r := rg.want(t, 201, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"quick-1","priority":"INTERACTIVE","env":{"K":"v"},"input":"hello"}`)
	if j := r.json(t); j["job_id"] != "quick-1" || j["trace_id"] == "" || j["state"] == "" || j["priority"] != "interactive" {
		t.Fatalf("submitted: %s", r.body)
	}
	rg.want(t, 200, "GET", "/v1/jobs/quick-1", "key-admin", "")
	if code, _ := rg.want(t, 404, "GET", "/v1/jobs/nope", "key-admin", "").errCode(t); code != "not_found" {
		t.Errorf("unknown job: code %s", code)
	}
	// Same job_id, different body.
	if code, _ := rg.want(t, 409, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"quick-1","input":"other"}`).errCode(t); code != "conflict" {
		t.Errorf("conflict: code %s", code)
	}
	// Invalid: the gateway's checks and the scheduler's, each naming the field.
	for body, field := range map[string]string{
		`{"topic":"job.gw","priority":"URGENT"}`:               "priority",
		`{"topic":"job.gw","max_attempts":"three"}`:            "max_attempts",
		`{"topic":"job.gw","colour":"red"}`:                    "colour",
		`{"topic":"job.gw","input":"x","input_base64":"eA=="}`: "input",
		`{"topic":"job.gw","input_base64":"%%%"}`:              "input_base64",
		`{"job_id":"x"}`:                         "topic",
		`{"topic":"not-a-job-subject"}`:          "topic",
		`{"topic":"job.gw","job_id":"bad id"}`:   "job_id",
		`{"topic":"job.gw","max_attempts":1000}`: "max_attempts",
		`{"topic":"job.gw"} {"topic":"job.gw"}`:  "",
	} {
		r := rg.want(t, 400, "POST", "/v1/jobs", "key-admin", body)
		if code, f := r.errCode(t); code != "invalid_argument" || f != field {
			t.Errorf("%s: code %s field %q (%s), want invalid_argument field %q", body, code, f, r.body, field)
		}
	}
	// Beyond 1 MiB.
	big := `{"topic":"job.gw","input":"` + strings.Repeat("x", gateway.MaxBodyBytes) + `"}`
	r = rg.want(t, 413, "POST", "/v1/jobs", "key-admin", big)
	if code, _ := r.errCode(t); code != "payload_too_large" || !strings.Contains(string(r.body), "1 MiB") {
		t.Errorf("413: %s", r.body)
	}
	// Denied by the shipped policy: recorded DENIED.
	r = rg.want(t, 201, "POST", "/v1/jobs", "key-admin", `{"topic":"sys.destroy","job_id":"denied-1"}`)
	if j := r.json(t); j["state"] != "DENIED" || j["rule_id"] != "forbidden-topic" || j["error"] == "" {
		t.Errorf("denied: %s", r.body)
	}
	// Cancel, then cancel again: 409.
	rg.want(t, 201, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"held-1"}`)
	if j := rg.want(t, 200, "POST", "/v1/jobs/held-1/cancel", "key-admin", `{"reason":"test"}`).json(t); j["state"] != "CANCELLED" {
		t.Errorf("cancelled: %v", j)
	}
	rg.want(t, 409, "POST", "/v1/jobs/held-1/cancel", "key-admin", "")
	rg.want(t, 404, "POST", "/v1/jobs/nope/cancel", "key-admin", "")
	// Listing: filters and pages.
	var page struct {
		Jobs []struct {
			JobID string `json:"job_id"`
			State string `json:"state"`
		} `json:"jobs"`
		Next string `json:"next_page_token"`
	}
	if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/jobs?state=cancelled&limit=10", "key-admin", "").body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Jobs) != 1 || page.Jobs[0].JobID != "held-1" {
		t.Errorf("cancelled jobs: %+v", page)
	}
	rg.want(t, 400, "GET", "/v1/jobs?state=bogus", "key-admin", "")
	rg.want(t, 400, "GET", "/v1/jobs?limit=-1", "key-admin", "")
	seen := map[string]bool{}
	token := ""
	for range 10 {
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/jobs?limit=1&page_token="+token, "key-admin", "").body, &page); err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			seen[j.JobID] = true
		}
		if token = page.Next; token == "" {
			break
		}
	}
	if !seen["quick-1"] || !seen["held-1"] || !seen["denied-1"] {
		t.Errorf("paging saw %v", seen)
	}
}

// A throttle of the policy is 429 with Retry-After.
func TestThrottledIs429(t *testing.T) {
	t.Parallel()
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`version: "t1"
rules:
  - id: slow
    decision: throttle
    reason: too fast
    throttle: {rate: 1, per: 1h, burst: 1, by: tenant}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	rg := start(t, gateway.Config{}, workertest.WithPolicy(policy))
	rg.want(t, 201, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"quick-t1"}`)
	r := rg.want(t, 429, "POST", "/v1/jobs", "key-admin", `{"topic":"job.gw","job_id":"quick-t2"}`)
	if code, _ := r.errCode(t); code != "throttled" || r.header.Get("Retry-After") == "" {
		t.Errorf("throttled: %s %v", r.body, r.header)
	}
}

// With no scheduler, 503; /readyz says so too.
func TestNoSchedulerIs503(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	c, err := client.Connect(url, client.Options{RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srv, err := gateway.New(gateway.Config{Client: c, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	rg := &rig{url: ts.URL, http: ts.Client()}
	rg.want(t, 503, "GET", "/v1/jobs/x", "", "")
	rg.want(t, 503, "POST", "/v1/jobs", "", `{"topic":"job.gw"}`)
	rg.want(t, 503, "GET", "/readyz", "", "")
	rg.want(t, 200, "GET", "/healthz", "", "")
}

// readSSE reads an event stream's data lines until it ends.
func readSSE(t *testing.T, body io.Reader, each func(job map[string]any)) {
	t.Helper()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var job map[string]any
		if err := json.Unmarshal([]byte(line), &job); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		each(job)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// The event stream follows a job from submission to COMPLETED and ends.
func TestEventsFromSubmitToCompleted(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"streamed"}`)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", rg.url+"/v1/jobs/streamed/events", nil)
	req.Header.Set("Authorization", "Bearer key-a")
	req.Header.Set("Accept-Encoding", "gzip") // not for a stream
	res, err := rg.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" || res.Header.Get("Content-Encoding") != "" {
		t.Fatalf("events: %d %v", res.StatusCode, res.Header)
	}
	var states []string
	readSSE(t, res.Body, func(job map[string]any) {
		st := job["state"].(string)
		states = append(states, st)
		if st == "RUNNING" {
			close(rg.g.gate("streamed"))
		}
	})
	if len(states) < 2 || states[len(states)-1] != "COMPLETED" || !contains(states, "RUNNING") {
		t.Fatalf("streamed states %v, want RUNNING ... COMPLETED, then the end", states)
	}
	// A job already ended: one event, then the end.
	var again []string
	req, _ = http.NewRequestWithContext(ctx, "GET", rg.url+"/v1/jobs/streamed/events", nil)
	req.Header.Set("Authorization", "Bearer key-a")
	res2, err := rg.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res2.Body.Close()
	readSSE(t, res2.Body, func(job map[string]any) { again = append(again, job["state"].(string)) })
	if len(again) != 1 || again[0] != "COMPLETED" {
		t.Errorf("ended job's stream: %v", again)
	}
	rg.want(t, 404, "GET", "/v1/jobs/nope/events", "key-a", "")
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A key of tenant A cannot read, list, follow or cancel B's job, nor submit
// for B; the administrator sees both.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	if j := rg.want(t, 201, "POST", "/v1/jobs", "key-b", `{"topic":"job.gw","job_id":"b-job"}`).json(t); j["tenant"] != "b" {
		t.Fatalf("b's job has tenant %v, want b (stamped)", j["tenant"])
	}
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"quick-a-job","tenant":"a"}`)
	unknown := rg.want(t, 404, "GET", "/v1/jobs/no-such", "key-a", "")
	other := rg.want(t, 404, "GET", "/v1/jobs/b-job", "key-a", "")
	if strings.ReplaceAll(string(other.body), "b-job", "X") != strings.ReplaceAll(string(unknown.body), "no-such", "X") {
		t.Errorf("another tenant's job %s, an unknown one %s: they differ", other.body, unknown.body)
	}
	rg.want(t, 404, "GET", "/v1/jobs/b-job/events", "key-a", "")
	rg.want(t, 404, "POST", "/v1/jobs/b-job/cancel", "key-a", "")
	rg.want(t, 403, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","tenant":"b"}`)
	rg.want(t, 403, "GET", "/v1/jobs?tenant=b", "key-a", "")
	ids := func(key string) []string {
		var page struct {
			Jobs []struct {
				JobID string `json:"job_id"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/jobs", key, "").body, &page); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, j := range page.Jobs {
			out = append(out, j.JobID)
		}
		sort.Strings(out)
		return out
	}
	if got := ids("key-a"); len(got) != 1 || got[0] != "quick-a-job" {
		t.Errorf("a lists %v", got)
	}
	if got := ids("key-admin"); len(got) != 2 {
		t.Errorf("admin lists %v", got)
	}
	rg.want(t, 200, "GET", "/v1/jobs/b-job", "key-admin", "")
	rg.want(t, 200, "POST", "/v1/jobs/b-job/cancel", "key-b", "")
}

// No key, a wrong key: 401. A role too weak: 403.
func TestAuth(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	r := rg.want(t, 401, "GET", "/v1/jobs", "", "")
	if code, _ := r.errCode(t); code != "unauthenticated" || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("no key: %s %v", r.body, r.header)
	}
	rg.want(t, 401, "GET", "/v1/jobs", "wrong", "")
	rg.want(t, 401, "POST", "/v1/jobs", "", `{"topic":"job.gw"}`)
	if code, _ := rg.want(t, 403, "POST", "/v1/jobs", "key-a-viewer", `{"topic":"job.gw"}`).errCode(t); code != "permission_denied" {
		t.Errorf("viewer submitting: %s", code)
	}
	rg.want(t, 403, "POST", "/v1/dlq/x/retry", "key-a", "")
	rg.want(t, 200, "GET", "/v1/jobs", "key-a-viewer", "")
	rg.want(t, 200, "GET", "/healthz", "", "")
	rg.want(t, 200, "GET", "/openapi.json", "", "")
}

// Workers, the dead-letter queue and its retry, the policy.
func TestWorkersDLQPolicy(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{}, workertest.WithMaxAttempts(1))
	var ws struct {
		Workers []map[string]any `json:"workers"`
	}
	systest.Poll(t, waitFor, 20*time.Millisecond, "a worker listed", func() (bool, string) {
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/workers", "key-a", "").body, &ws); err != nil {
			t.Fatal(err)
		}
		return len(ws.Workers) > 0, ""
	})
	rg.want(t, 200, "GET", "/readyz", "", "")
	p := rg.want(t, 200, "GET", "/v1/policy", "key-a-viewer", "").json(t)
	if rules, _ := p["rules"].([]any); len(rules) == 0 || p["version"] == "" {
		t.Errorf("policy: %v", p)
	}
	d := rg.want(t, 200, "POST", "/v1/policy/eval", "key-a", `{"topic":"sys.destroy"}`).json(t)
	if d["decision"] != "deny" || d["rule_id"] != "forbidden-topic" {
		t.Errorf("eval: %v", d)
	}
	rg.want(t, 403, "POST", "/v1/policy/eval", "key-a", `{"topic":"job.gw","tenant":"b"}`)
	// A job that times out on its one attempt is dead-lettered.
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"doomed","timeout_ms":50}`)
	var dead struct {
		Jobs []map[string]any `json:"jobs"`
	}
	systest.Poll(t, waitFor, 20*time.Millisecond, "a dead letter", func() (bool, string) {
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/dlq", "key-a", "").body, &dead); err != nil {
			t.Fatal(err)
		}
		return len(dead.Jobs) > 0, ""
	})
	if len(dead.Jobs) != 1 || dead.Jobs[0]["job_id"] != "doomed" {
		t.Fatalf("dead letters: %v", dead)
	}
	var bDead struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/dlq", "key-b", "").body, &bDead); err != nil || len(bDead.Jobs) != 0 {
		t.Errorf("b sees a's dead letters: %v %v", bDead, err)
	}
	if j := rg.want(t, 201, "POST", "/v1/dlq/doomed/retry", "key-admin", "").json(t); j["job_id"] != "doomed-redrive-1" {
		t.Errorf("retried: %v", j)
	}
	rg.want(t, 404, "POST", "/v1/dlq/nope/retry", "key-admin", "")
}

// Request ids, gzip, CORS and the per-key rate limit.
func TestConventions(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{CORSOrigin: "https://app.example", RateLimit: 1})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", rg.url+"/v1/policy", nil)
	req.Header.Set("Authorization", "Bearer key-admin")
	req.Header.Set("X-Request-Id", "req-123")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Origin", "https://app.example")
	res, err := http.DefaultTransport.RoundTrip(req) // no transparent gunzip
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("X-Request-Id") != "req-123" || res.Header.Get("Content-Encoding") != "gzip" ||
		res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("headers: %v", res.Header)
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.NewDecoder(zr).Decode(&p); err != nil || p["rules"] == nil {
		t.Fatalf("gzipped body: %v %v", p, err)
	}
	// Another origin gets no CORS header; a request without an id gets one.
	req2, _ := http.NewRequestWithContext(ctx, "GET", rg.url+"/healthz", nil)
	req2.Header.Set("Origin", "https://evil.example")
	res2, err := rg.http.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.Header.Get("Access-Control-Allow-Origin") != "" || res2.Header.Get("X-Request-Id") == "" {
		t.Errorf("other origin: %v", res2.Header)
	}
	// A burst of 2 at 1 per second: the key runs out; another key does not.
	limited := false
	for range 5 {
		if r := rg.do(t, "GET", "/v1/policy", "key-a", ""); r.status == 429 {
			limited = r.header.Get("Retry-After") != ""
			break
		}
	}
	if !limited {
		t.Error("key-a was never rate limited")
	}
	rg.want(t, 200, "GET", "/v1/policy", "key-b", "")
}

// Without keys every caller is an administrator; a loopback check guards
// where that may listen.
func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:80": true, "[::1]:8080": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.1:80": false, "nonsense": false,
	} {
		if got := gateway.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	good := "keys:\n  - id: ci\n    sha256: " + gateway.HashKey("k") + "\n    tenant: a\n    role: submitter\n"
	if k, err := gateway.ParseKeys([]byte(good)); err != nil || k.Len() != 1 {
		t.Fatalf("good file: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field": "keys:\n  - id: ci\n    sha256: " + gateway.HashKey("k") + "\n    role: admin\n    colour: red\n",
		"short hash":    "keys:\n  - id: ci\n    sha256: abc\n    role: admin\n",
		"no tenant":     "keys:\n  - id: ci\n    sha256: " + gateway.HashKey("k") + "\n    role: viewer\n",
		"bad role":      "keys:\n  - id: ci\n    sha256: " + gateway.HashKey("k") + "\n    role: god\n",
		"bad id":        "keys:\n  - id: c.i\n    sha256: " + gateway.HashKey("k") + "\n    role: admin\n",
		"same hash":     "keys:\n  - {id: a, sha256: " + gateway.HashKey("k") + ", role: admin}\n  - {id: b, sha256: " + gateway.HashKey("k") + ", role: admin}\n",
	} {
		if _, err := gateway.ParseKeys([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_ = bytes.MinRead
}

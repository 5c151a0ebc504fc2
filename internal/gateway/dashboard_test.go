package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/gateway/ui"
	"github.com/cortex-os/core/internal/systest"
)

// open starts a GET of a stream and leaves its body open until the test
// ends.
func (rg *rig) open(t *testing.T, path, key string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", rg.url+path, nil)
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
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// sseJobs delivers the jobs of a stream's data lines, one at a time, on a
// channel closed when the stream ends.
func sseJobs(t *testing.T, res *http.Response) <-chan map[string]any {
	t.Helper()
	ch := make(chan map[string]any, 256)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var job map[string]any
			if json.Unmarshal([]byte(line), &job) == nil {
				ch <- job
			}
		}
	}()
	return ch
}

// waitJob reads jobs until one is job id in state, failing on what ok
// refuses (nil: any) or when the stream ends.
func waitJob(t *testing.T, ch <-chan map[string]any, id, state string, ok func(job map[string]any) bool) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case job, open := <-ch:
			if !open {
				t.Fatalf("the stream ended before %s was %s", id, state)
			}
			if ok != nil && !ok(job) {
				t.Fatalf("unexpected event %v", job)
			}
			if job["job_id"] == id && job["state"] == state {
				return
			}
		case <-timeout:
			t.Fatalf("%s was not %s within %s", id, state, waitFor)
		}
	}
}

// The dashboard is served at / and /ui/, with a policy that keeps it to its
// own origin; unknown paths are still the API's JSON 404.
func TestDashboardServed(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	r := rg.want(t, 200, "GET", "/", "", "")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(r.body), "/ui/app.js") {
		t.Fatalf("/: %s %.200s", ct, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); csp != ui.ContentSecurityPolicy || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("/ headers: %v", r.header)
	}
	for path, ct := range map[string]string{"/ui/app.js": "javascript", "/ui/app.css": "text/css", "/ui/favicon.svg": "image/svg+xml"} {
		if r := rg.want(t, 200, "GET", path, "", ""); !strings.Contains(r.header.Get("Content-Type"), ct) {
			t.Errorf("%s: content type %q", path, r.header.Get("Content-Type"))
		}
	}
	rg.want(t, 404, "GET", "/ui/nope.js", "", "")
	if code, _ := rg.want(t, 404, "GET", "/nope", "", "").errCode(t); code != "not_found" {
		t.Errorf("/nope: %s", code)
	}
	rg.want(t, 404, "POST", "/", "", "")
}

// GET /v1/me says what the key is, for the page to offer what it may do.
func TestWhoAmI(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	for key, want := range map[string]gateway.Caller{
		"key-admin":    {ID: "admin", Role: "admin", AllTenants: true, Auth: true},
		"key-a":        {ID: "a-submitter", Role: "submitter", Tenant: "a", Auth: true},
		"key-a-viewer": {ID: "a-viewer", Role: "viewer", Tenant: "a", Auth: true},
	} {
		var got gateway.Caller
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/me", key, "").body, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: %+v, want %+v", key, got, want)
		}
	}
	rg.want(t, 401, "GET", "/v1/me", "", "")
	rg.want(t, 401, "GET", "/v1/me", "wrong", "")
}

// /v1/events streams every job's changes to an administrator, and only its
// tenant's to a tenant's key.
func TestAllEventsByTenant(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	res := rg.open(t, "/v1/events", "key-admin")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", res.StatusCode, res.Header)
	}
	all := sseJobs(t, rg.open(t, "/v1/events", "key-admin"))
	mine := sseJobs(t, rg.open(t, "/v1/events", "key-a-viewer"))

	// b's job ends before a's is submitted: the scheduler publishes in order,
	// so a tenant's stream that shows a's job without b's before it filters.
	rg.want(t, 201, "POST", "/v1/jobs", "key-b", `{"topic":"job.gw","job_id":"quick-of-b"}`)
	waitJob(t, all, "quick-of-b", "COMPLETED", nil)
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"held-of-a"}`)
	waitJob(t, all, "held-of-a", "RUNNING", nil)
	close(rg.g.gate("held-of-a"))
	onlyA := func(job map[string]any) bool { return job["tenant"] == "a" }
	waitJob(t, mine, "held-of-a", "COMPLETED", onlyA)
	waitJob(t, all, "held-of-a", "COMPLETED", nil)

	rg.want(t, 401, "GET", "/v1/events", "", "")
}

// The overview counts what the scheduler holds: active jobs by state, what
// ended in the window, per-minute throughput and wait, workers and pools.
func TestOverview(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	for _, id := range []string{"quick-1", "quick-2", "quick-3"} {
		rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"`+id+`"}`)
	}
	rg.want(t, 201, "POST", "/v1/jobs", "key-b", `{"topic":"job.gw","job_id":"held-b"}`)
	t.Cleanup(func() { close(rg.g.gate("held-b")) })

	var ov gateway.Overview
	systest.Poll(t, waitFor, 20*time.Millisecond, "the overview to show 3 completed and 1 running", func() (bool, string) {
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/overview?window_minutes=5", "key-admin", "").body, &ov); err != nil {
			t.Fatal(err)
		}
		return ov.ByState["COMPLETED"] == 3 && ov.ByState["RUNNING"]+ov.ByState["DISPATCHED"] == 1, fmt.Sprintf("%+v", ov)
	})
	if ov.WindowMinutes != 5 || len(ov.Throughput) != 5 || len(ov.QueueWait) != 5 {
		t.Fatalf("window: %+v", ov)
	}
	completed, waited := 0, 0
	for i := range ov.Throughput {
		completed += ov.Throughput[i].Completed
		waited += ov.QueueWait[i].Count
	}
	if completed != 3 || waited != 4 {
		t.Errorf("throughput %d completed (want 3), queue wait of %d jobs (want 4): %+v", completed, waited, ov)
	}
	if ov.Workers.Up != 1 || ov.Workers.Capacity < 1 || len(ov.Pools) != 1 || ov.Pools[0].Workers != 1 {
		t.Errorf("workers %+v pools %+v", ov.Workers, ov.Pools)
	}

	// A tenant's key counts its tenant's jobs only.
	if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/overview", "key-a-viewer", "").body, &ov); err != nil {
		t.Fatal(err)
	}
	if ov.ByState["COMPLETED"] != 3 || ov.ByState["RUNNING"]+ov.ByState["DISPATCHED"] != 0 || ov.WindowMinutes != gateway.DefaultOverviewWindow {
		t.Errorf("tenant a's overview: %+v", ov.ByState)
	}
	for _, bad := range []string{"0", "61", "x"} {
		if _, f := rg.want(t, 400, "GET", "/v1/overview?window_minutes="+bad, "key-admin", "").errCode(t); f != "window_minutes" {
			t.Errorf("window %s: field %q", bad, f)
		}
	}
}

// GET /v1/jobs/{id}/input returns the inline input, as text when it is.
func TestJobInput(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"quick-text","input":"hello"}`)
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"quick-bin","input_base64":"/w=="}`)
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"quick-none"}`)
	for id, want := range map[string]gateway.JobInput{
		"quick-text": {JobID: "quick-text", Bytes: 5, Input: "hello", InputBase64: "aGVsbG8="},
		"quick-bin":  {JobID: "quick-bin", Bytes: 1, InputBase64: "/w=="},
		"quick-none": {JobID: "quick-none"},
	} {
		var got gateway.JobInput
		if err := json.Unmarshal(rg.want(t, 200, "GET", "/v1/jobs/"+id+"/input", "key-a-viewer", "").body, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: %+v, want %+v", id, got, want)
		}
	}
	rg.want(t, 404, "GET", "/v1/jobs/quick-text/input", "key-b", "")
	rg.want(t, 404, "GET", "/v1/jobs/nope/input", "key-admin", "")
}

package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/client"
	"github.com/cortex-os/core/pkg/worker"
)

// resultHandler does what a job's id says: "fail-" fails, "none-"
// completes with no result, "mem-" with a memory:// pointer, "hold-" waits
// to be cancelled, and the others complete with their input as the result.
var resultHandler = worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
	id := job.ID()
	switch {
	case strings.HasPrefix(id, "fail-"):
		return worker.Result{}, errors.New("boom")
	case strings.HasPrefix(id, "none-"):
		return worker.Result{}, nil
	case strings.HasPrefix(id, "mem-"):
		return worker.Result{Ptr: "memory://res/" + id}, nil
	case strings.HasPrefix(id, "hold-"):
		<-ctx.Done()
		return worker.Result{}, ctx.Err()
	}
	in, err := job.Input(ctx)
	if err != nil {
		return worker.Result{}, err
	}
	return worker.Result{Data: in}, nil
})

// rawPost submits body as a raw input with the query q.
func (rg *rig) rawPost(t *testing.T, q, key string, body []byte) resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", rg.url+"/v1/jobs?"+q, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := rg.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// waitState polls a job until it is in state.
func (rg *rig) waitState(t *testing.T, id, key, state string) {
	t.Helper()
	systest.Poll(t, waitFor, 20*time.Millisecond, "job "+id+" "+state, func() (bool, string) {
		r := rg.do(t, "GET", "/v1/jobs/"+id, key, "")
		return r.status == 200 && r.json(t)["state"] == state, fmt.Sprintf("%d %s", r.status, r.body)
	})
}

// GET /v1/jobs/{id}/result: each status docs/api.md lists, against a real
// scheduler and worker; and a raw-body input beyond the JSON bound goes
// through the blob store and comes back as the result, byte for byte.
func TestResultStatuses(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	if _, err := rg.env.RunWorker(worker.Config{Kind: "res", Handler: resultHandler}); err != nil {
		t.Fatal(err)
	}

	// A small input: an inline result (a data: URL).
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.res","job_id":"small-1","input":"hello"}`)
	rg.waitState(t, "small-1", "key-a", "COMPLETED")
	r := rg.want(t, 200, "GET", "/v1/jobs/small-1/result", "key-a", "")
	if string(r.body) != "hello" || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("result: %q %v", r.body, r.header)
	}

	// 3 MiB, beyond the JSON bound: as a raw body, uploaded to the blob
	// store; the result (as large) comes back from it.
	big := make([]byte, 3<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	r = rg.rawPost(t, "topic=job.res&job_id=big-1&env=K=v&priority=batch", "key-a", big)
	if r.status != 201 {
		t.Fatalf("raw submit: %d %s", r.status, r.body)
	}
	if j := r.json(t); !strings.HasPrefix(j["context_ptr"].(string), "obj://") || j["tenant"] != "a" || j["priority"] != "batch" {
		t.Errorf("raw submit: %s", r.body)
	}
	rg.waitState(t, "big-1", "key-a", "COMPLETED")
	r = rg.want(t, 200, "GET", "/v1/jobs/big-1/result", "key-a", "")
	if !bytes.Equal(r.body, big) || !strings.HasPrefix(r.header.Get("X-Cortex-Result-Ptr"), "obj://") {
		t.Errorf("result: %d bytes (ptr %s), want the 3 MiB input back", len(r.body), r.header.Get("X-Cortex-Result-Ptr"))
	}
	// Another tenant's job's result is a job that does not exist.
	if code, _ := rg.want(t, 404, "GET", "/v1/jobs/big-1/result", "key-b", "").errCode(t); code != "not_found" {
		t.Errorf("other tenant: code %s", code)
	}
	rg.want(t, 404, "GET", "/v1/jobs/nope/result", "key-a", "")

	// Not ended: 409 with Retry-After.
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.res","job_id":"hold-1"}`)
	rg.waitState(t, "hold-1", "key-a", "RUNNING")
	r = rg.want(t, 409, "GET", "/v1/jobs/hold-1/result", "key-a", "")
	if code, _ := r.errCode(t); code != "not_terminal" || r.header.Get("Retry-After") == "" || !strings.Contains(string(r.body), "RUNNING") {
		t.Errorf("not ended: %s %v", r.body, r.header)
	}
	rg.want(t, 200, "POST", "/v1/jobs/hold-1/cancel", "key-a", "")
	if code, _ := rg.want(t, 422, "GET", "/v1/jobs/hold-1/result", "key-a", "").errCode(t); code != "no_result" {
		t.Errorf("cancelled: code %s", code)
	}

	// Failed: 422 with the error.
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.res","job_id":"fail-1","max_attempts":1}`)
	rg.waitState(t, "fail-1", "key-a", "FAILED")
	r = rg.want(t, 422, "GET", "/v1/jobs/fail-1/result", "key-a", "")
	if code, _ := r.errCode(t); code != "no_result" || !strings.Contains(string(r.body), "FAILED") || !strings.Contains(string(r.body), "boom") {
		t.Errorf("failed: %s", r.body)
	}

	// Completed without a result: 204, no body.
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.res","job_id":"none-1"}`)
	rg.waitState(t, "none-1", "key-a", "COMPLETED")
	if r := rg.want(t, 204, "GET", "/v1/jobs/none-1/result", "key-a", ""); len(r.body) != 0 {
		t.Errorf("204 with a body %q", r.body)
	}

	// A pointer the gateway cannot read: 422 naming it.
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.res","job_id":"mem-1"}`)
	rg.waitState(t, "mem-1", "key-a", "COMPLETED")
	if r := rg.want(t, 422, "GET", "/v1/jobs/mem-1/result", "key-a", ""); !strings.Contains(string(r.body), "memory://res/mem-1") {
		t.Errorf("memory pointer: %s", r.body)
	}

	// A viewer may read a result; no key may not.
	rg.want(t, 200, "GET", "/v1/jobs/small-1/result", "key-a-viewer", "")
	rg.want(t, 401, "GET", "/v1/jobs/small-1/result", "", "")
}

// The raw form's own errors: fields in the query are checked as the JSON
// body's are, a query with a JSON body is refused, and an input beyond the
// blob store's cap is 413 naming the cap.
func TestRawSubmitBounds(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	for q, field := range map[string]string{
		"job_id=x":                        "topic",
		"topic=job.gw&colour=red":         "colour",
		"topic=job.gw&max_attempts=three": "max_attempts",
		"topic=job.gw&env=NOEQUALS":       "env",
		"topic=job.gw&priority=URGENT":    "priority",
	} {
		r := rg.rawPost(t, q, "key-admin", []byte("x"))
		if code, f := r.errCode(t); r.status != 400 || code != "invalid_argument" || f != field {
			t.Errorf("%s: %d %s, want 400 field %s", q, r.status, r.body, field)
		}
	}
	if r := rg.rawPost(t, "topic=job.gw&tenant=b", "key-a", []byte("x")); r.status != 403 {
		t.Errorf("tenant a submitting raw for b: %d %s", r.status, r.body)
	}
	rg.want(t, 400, "POST", "/v1/jobs?topic=job.gw", "key-admin", `{"topic":"job.gw"}`)

	// A gateway whose blob store caps inputs at 2 MiB.
	store, err := blob.New(rg.env.Conn(), blob.Config{MaxBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(rg.env.Conn(), client.Options{Blobs: store})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{Client: c, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	small := &rig{url: ts.URL, http: ts.Client()}
	r := small.rawPost(t, "topic=job.gw&job_id=quick-raw", "", make([]byte, 2<<20+1))
	if code, _ := r.errCode(t); r.status != 413 || code != "payload_too_large" || !strings.Contains(string(r.body), "2097152") {
		t.Errorf("over the cap: %d %s", r.status, r.body)
	}
	if r := small.rawPost(t, "topic=job.gw&job_id=quick-raw", "", make([]byte, 2<<20)); r.status != 201 {
		t.Errorf("at the cap: %d %s", r.status, r.body)
	}
}

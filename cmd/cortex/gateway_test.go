package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
)

// serveCortex runs cortex with args in the background until the test ends,
// and returns its output so far (call it again to read more).
func serveCortex(t *testing.T, args ...string) (output func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCommand()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("cortex %s: %v\n%s", strings.Join(args, " "), err, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("cortex %s did not stop", strings.Join(args, " "))
		}
	})
	return out.String
}

// waitMatch waits until out() matches re and returns the submatches.
func waitMatch(t *testing.T, out func() string, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	systest.Poll(t, 30*time.Second, 10*time.Millisecond, re.String(), func() (bool, string) {
		m = re.FindStringSubmatch(out())
		return m != nil, "\n" + out()
	})
	return m
}

// call makes an HTTP request and returns the status and body.
func call(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

var gatewayURLRE = regexp.MustCompile(`API on (https?://\S+)/v1 `)

// cortex gateway: without --api-keys it refuses an address that is not
// loopback before connecting to anything, unless --insecure-no-auth; with
// keys it serves any address and asks for them; /healthz and /readyz say
// whether a scheduler answers.
func TestGatewayCommand(t *testing.T) {
	t.Parallel()
	closed := "nats://127.0.0.1:1" // never reached: the rule is checked first
	for _, addr := range []string{"0.0.0.0:0", ":8080"} {
		_, err := cortexCmd(context.Background(), "gateway", "--api-addr", addr, "--nats-url", closed)
		if err == nil || !strings.Contains(err.Error(), "--insecure-no-auth") {
			t.Errorf("gateway --api-addr %s without keys: %v, want refused naming --insecure-no-auth", addr, err)
		}
	}
	url := natstest.URL(t)

	out := serveCortex(t, "gateway", "--api-addr", "0.0.0.0:0", "--insecure-no-auth", "--nats-url", url)
	base := waitMatch(t, out, gatewayURLRE)[1]
	port := base[strings.LastIndex(base, ":"):]
	if code, _ := call(t, "GET", "http://127.0.0.1"+port+"/healthz", "", ""); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	// NATS, but no scheduler.
	if code, body := call(t, "GET", "http://127.0.0.1"+port+"/readyz", "", ""); code != 503 || !strings.Contains(body, "scheduler") {
		t.Errorf("readyz with no scheduler: %d %s", code, body)
	}

	keysFile := filepath.Join(t.TempDir(), "keys.yaml")
	keyYAML := "keys:\n  - id: ops\n    sha256: " + gateway.HashKey("secret-key") + "\n    role: admin\n"
	if err := os.WriteFile(keysFile, []byte(keyYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	out = serveCortex(t, "gateway", "--api-addr", "0.0.0.0:0", "--api-keys", keysFile, "--nats-url", url, "--rate-limit", "100")
	base = waitMatch(t, out, gatewayURLRE)[1]
	port = base[strings.LastIndex(base, ":"):]
	if code, _ := call(t, "GET", "http://127.0.0.1"+port+"/v1/me", "", ""); code != 401 {
		t.Errorf("no key: %d, want 401", code)
	}
	if code, body := call(t, "GET", "http://127.0.0.1"+port+"/v1/me", "secret-key", ""); code != 200 || !strings.Contains(body, `"id":"ops"`) {
		t.Errorf("with the key: %d %s", code, body)
	}
	if !strings.Contains(out(), "1 API keys from "+keysFile) {
		t.Errorf("gateway does not say where its keys are from:\n%s", out())
	}
	if _, err := cortexCmd(context.Background(), "gateway", "--api-keys", filepath.Join(t.TempDir(), "none.yaml"), "--nats-url", closed); err == nil {
		t.Error("a missing key file is not an error")
	}
}

// cortex dev --auth runs a gateway with API keys it makes: the
// administrator's and each tenant's, printed and written to the
// credentials files; a request with no key is 401, the administrator's
// key submits a job that completes, and a tenant's key acts for its tenant
// only. Without --auth dev refuses to serve beyond loopback.
func TestDevGatewayAuth(t *testing.T) {
	t.Parallel()
	if _, err := cortexCmd(context.Background(), "dev", "--api-addr", "0.0.0.0:0", "--port", "-1"); err == nil || !strings.Contains(err.Error(), "--auth") {
		t.Errorf("dev --api-addr 0.0.0.0:0 without --auth: %v, want refused", err)
	}
	dataDir := filepath.Join(t.TempDir(), "dev")
	out := serveCortex(t, "dev", "--auth", "--port", "-1", "--http-port", "0", "--api-addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--workers", "1", "--work-time", "0", "--log-level", "error", "--code-python=false")
	waitMatch(t, out, regexp.MustCompile(`Ctrl-C stops`))
	base := waitMatch(t, out, regexp.MustCompile(`HTTP API:\s+(http://127\.0\.0\.1:\d+)/v1`))[1]
	if !strings.Contains(out(), "dashboard:   "+base+"/") {
		t.Errorf("dev prints no dashboard URL:\n%s", out())
	}
	keys := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(admin|tenant-a|tenant-b)\s+API key (cx_\S+)`).FindAllStringSubmatch(out(), -1) {
		keys[m[1]] = m[2]
	}
	if len(keys) != 3 {
		t.Fatalf("dev --auth printed keys %v, want admin, tenant-a, tenant-b:\n%s", keys, out())
	}
	for file, who := range map[string]string{devCredentialsFile: "admin", "dev-credentials-tenant-a.env": "tenant-a"} {
		b, err := os.ReadFile(filepath.Join(dataDir, file))
		if err != nil || !strings.Contains(string(b), "export CORTEX_API_URL="+base+" CORTEX_API_KEY="+keys[who]+"\n") {
			t.Errorf("%s: %q, %v; want %s's key", file, b, err, who)
		}
	}

	if code, body := call(t, "POST", base+"/v1/jobs", "", `{"topic":"job.echo"}`); code != 401 {
		t.Errorf("no key: %d %s, want 401", code, body)
	}
	if code, _ := call(t, "GET", base+"/v1/jobs", "cx_wrong", ""); code != 401 {
		t.Errorf("a wrong key: %d, want 401", code)
	}
	code, body := call(t, "POST", base+"/v1/jobs", keys["admin"], `{"topic":"job.echo","job_id":"http-1"}`)
	if code != 201 {
		t.Fatalf("submit with the admin key: %d %s", code, body)
	}
	systest.Poll(t, 20*time.Second, 50*time.Millisecond, "job http-1 COMPLETED", func() (bool, string) {
		_, body = call(t, "GET", base+"/v1/jobs/http-1", keys["admin"], "")
		return strings.Contains(body, `"state":"COMPLETED"`), body
	})
	// Tenants.
	if code, body := call(t, "POST", base+"/v1/jobs", keys["tenant-a"], `{"topic":"job.echo","job_id":"a-1"}`); code != 201 || !strings.Contains(body, `"tenant":"a"`) {
		t.Errorf("tenant-a submitting: %d %s", code, body)
	}
	if code, _ := call(t, "POST", base+"/v1/jobs", keys["tenant-a"], `{"topic":"job.echo","tenant":"b"}`); code != 403 {
		t.Errorf("tenant-a submitting for b: %d, want 403", code)
	}
	if code, _ := call(t, "GET", base+"/v1/jobs/a-1", keys["tenant-b"], ""); code != 404 {
		t.Errorf("tenant-b reading a's job: %d, want 404", code)
	}
	if code, _ := call(t, "GET", base+"/v1/jobs/a-1", keys["admin"], ""); code != 200 {
		t.Errorf("admin reading a's job: %d, want 200", code)
	}
	if code, _ := call(t, "POST", base+"/v1/dlq/a-1/retry", keys["tenant-a"], ""); code != 403 {
		t.Errorf("a submitter's key re-driving: %d, want 403 (admin only)", code)
	}
	// The metrics count every tenant's jobs: the administrator's key only.
	for who, want := range map[string]int{"": 401, "tenant-a": 403, "admin": 200} {
		if code, _ := call(t, "GET", base+"/metrics", keys[who], ""); code != want {
			t.Errorf("/metrics with %q's key: %d, want %d", who, code, want)
		}
	}

	// cortex gateway on its own, with the administrator client's NATS
	// credentials (the --nats-* flags of every command) and a key file: it
	// reaches the scheduler under auth and serves the same jobs.
	m := waitMatch(t, out, regexp.MustCompile(`submit --nats-url (\S+) --nats-user (client) --nats-password (\S+) --topic`))
	keysFile := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keysFile, []byte("keys:\n  - {id: ops, sha256: "+gateway.HashKey("ops-key")+", role: admin}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := serveCortex(t, "gateway", "--api-addr", "127.0.0.1:0", "--api-keys", keysFile, "--nats-url", m[1], "--nats-user", m[2], "--nats-password", m[3])
	gwBase := waitMatch(t, gw, gatewayURLRE)[1]
	if code, body := call(t, "GET", gwBase+"/readyz", "", ""); code != 200 {
		t.Errorf("cortex gateway under auth: readyz %d %s", code, body)
	}
	if code, body := call(t, "GET", gwBase+"/v1/jobs/a-1", "ops-key", ""); code != 200 || !strings.Contains(body, `"tenant":"a"`) {
		t.Errorf("cortex gateway under auth: %d %s", code, body)
	}
}

// waitBody polls url until its body (200) contains every string of want.
func waitBody(t *testing.T, url, key string, want ...string) string {
	t.Helper()
	var body string
	systest.Poll(t, 30*time.Second, 50*time.Millisecond, "GET "+url+" to have "+fmt.Sprintf("%q", want), func() (bool, string) {
		var code int
		code, body = call(t, "GET", url, key, "")
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		return code == 200 && missing == "", fmt.Sprintf("%d, no %q in:\n%s", code, missing, body)
	})
	return body
}

// cortex dev serves one registry on its gateway's /metrics: after a job
// submitted over HTTP completes, the scheduler's, the echo worker's and
// the gateway's series are there.
func TestDevGatewayMetrics(t *testing.T) {
	t.Parallel()
	out := serveCortex(t, "dev", "--port", "-1", "--http-port", "0", "--api-addr", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "dev"),
		"--workers", "1", "--work-time", "0", "--log-level", "error", "--code-python=false")
	waitMatch(t, out, regexp.MustCompile(`Ctrl-C stops`))
	base := waitMatch(t, out, regexp.MustCompile(`HTTP API:\s+(http://127\.0\.0\.1:\d+)/v1`))[1]
	if !strings.Contains(out(), "metrics:     "+base+"/metrics") {
		t.Errorf("dev prints no metrics URL:\n%s", out())
	}
	if code, body := call(t, "POST", base+"/v1/jobs", "", `{"topic":"job.echo","job_id":"m-1"}`); code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	waitBody(t, base+"/v1/jobs/m-1", "", `"state":"COMPLETED"`)
	waitBody(t, base+"/metrics", "",
		"cortex_jobs_submitted_total 1",
		`cortex_jobs_finished_total{state="COMPLETED"} 1`,
		`cortex_workers{pool="default"} 1`,
		`cortex_worker_jobs_total{status="completed",topic="job.echo"} 1`,
		`cortex_gateway_requests_total{code="201",route="POST /v1/jobs"} 1`,
		"go_goroutines", "process_resident_memory_bytes")
}

// cortex gateway --metrics-addr serves the gateway's own series on that
// address (not on the API's).
func TestGatewayMetricsAddr(t *testing.T) {
	t.Parallel()
	out := serveCortex(t, "gateway", "--api-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--nats-url", natstest.URL(t))
	base := waitMatch(t, out, gatewayURLRE)[1]
	murl := waitMatch(t, out, regexp.MustCompile(`metrics:\s+(http://127\.0\.0\.1:\d+/metrics)`))[1]
	if code, _ := call(t, "GET", base+"/healthz", "", ""); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	if code, _ := call(t, "GET", base+"/metrics", "", ""); code != 404 {
		t.Errorf("the API's /metrics: %d, want 404 (served on --metrics-addr)", code)
	}
	waitBody(t, murl, "",
		`cortex_gateway_requests_total{code="200",route="GET /healthz"} 1`,
		`cortex_gateway_requests_total{code="404",route="GET /metrics"} 1`,
		`cortex_gateway_request_seconds_bucket{route="GET /healthz",le="+Inf"} 1`,
		"go_goroutines", "process_cpu_seconds_total")
}

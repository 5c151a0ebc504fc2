package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
)

// Issue 17's "done when", through the binaries as a user types it: cortex dev
// (here with --auth, so the sandboxed worker joins as its own user), then
// `cortex submit --topic job.code.python --input script.py --wait` and
// `cortex job result ID`, which prints the script's output (in the worker's
// JSON result). A script that exits non-zero is FAILED with its exit code.
// The sandbox must work here: without bubblewrap dev says why and the test
// fails (CI installs it).
func TestCodePythonThroughTheCLI(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	port := systest.FreePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	dataDir := filepath.Join(dir, "dev")
	dev := start(t, binCortex, nil, "dev", "--auth", "--port", strconv.Itoa(port), "--http-port", "0",
		"--data-dir", dataDir, "--workers", "0", "--log-level", "info", "--api-addr", "127.0.0.1:0")
	waitReady(t, dev)
	if !strings.Contains(dev.Stdout(), "code-python-1") {
		t.Fatalf("cortex dev --auth runs no job.code.python worker:\n%s", dev.Stdout())
	}
	env := devClientEnv(t, dataDir)
	if !strings.Contains(strings.Join(env, " "), "NATS_URL="+url) {
		t.Fatalf("dev credentials %v are not for %s", env, url)
	}

	script := filepath.Join(dir, "script.py")
	if err := os.WriteFile(script, []byte("import sys\nprint(sum(range(10)), 'from', sys.version_info[0])\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := cortexOK(t, env, "submit", "--topic", "job.code.python", "--input", script, "--wait")
	id := systest.ParseAttrs(systest.Lines(out)[0])["job_id"]
	if cs := changes(out); len(cs) == 0 || cs[len(cs)-1].State != "COMPLETED" {
		t.Fatalf("submit --wait: changes %+v, want COMPLETED last\n%s", cs, out)
	}
	var res struct {
		ExitCode  int    `json:"exit_code"`
		Stdout    string `json:"stdout"`
		Truncated bool   `json:"truncated"`
	}
	raw := cortexOK(t, env, "job", "result", id)
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatalf("cortex job result %s: %v\n%s", id, err, raw)
	}
	if res.ExitCode != 0 || res.Stdout != "45 from 3\n" || res.Truncated {
		t.Errorf("cortex job result %s: %+v, want exit 0 and the script's output", id, res)
	}

	bad := filepath.Join(dir, "bad.py")
	if err := os.WriteFile(bad, []byte("import sys\nsys.stderr.write('boom\\n')\nsys.exit(3)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := cortex(t, env, "submit", "--topic", "job.code.python", "--input", bad, "--max-attempts", "1", "--wait")
	badID := systest.ParseAttrs(systest.Lines(p.Stdout())[0])["job_id"]
	job := getJobEnv(t, env, badID)
	if job.State != "FAILED" || !strings.Contains(job.Error, "3") || !strings.Contains(job.Error, "boom") {
		t.Errorf("a script exiting 3: %+v, want FAILED naming the exit code and stderr's tail", job)
	}

	// The gateway's /metrics serves one registry: the scheduler's, the
	// sandboxed worker's and the gateway's series, to the administrator's key.
	api := devAPIEnv(t, dataDir)
	for _, want := range []string{
		`cortex_worker_jobs_total{status="completed",topic="job.code.python"} 1`,
		`cortex_jobs_finished_total{state="COMPLETED"} 1`,
		`cortex_gateway_requests_total{code="200",route="GET /metrics"}`, // an earlier scrape's
	} {
		systest.Poll(t, 20*time.Second, 100*time.Millisecond, "dev's /metrics to have "+want, func() (bool, string) {
			metrics := httpGet(t, api["CORTEX_API_URL"]+"/metrics", api["CORTEX_API_KEY"])
			return strings.Contains(metrics, want), "\n" + metrics
		})
	}
	dev.Interrupt(t)
	if code := dev.Wait(t, exitTimeout); code != 0 {
		t.Errorf("cortex dev exited %d after SIGINT, want 0", code)
	}
}

// devAPIEnv is the administrator's CORTEX_API_URL and CORTEX_API_KEY from
// the credentials file cortex dev --auth writes.
func devAPIEnv(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-credentials.env"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range strings.Fields(strings.ReplaceAll(string(b), "export ", " ")) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "CORTEX_API_") {
			out[k] = v
		}
	}
	if out["CORTEX_API_URL"] == "" || out["CORTEX_API_KEY"] == "" {
		t.Fatalf("no CORTEX_API_URL and CORTEX_API_KEY in the dev credentials:\n%s", b)
	}
	return out
}

// httpGet is GET url with a bearer key; anything but 200 fails the test.
func httpGet(t *testing.T, url, key string) string {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	return string(b)
}

// devClientEnv is the administrator client's environment from the
// credentials file cortex dev --auth writes ("export K=V K=V ...").
func devClientEnv(t *testing.T, dataDir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-credentials.env"))
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, f := range strings.Fields(strings.TrimPrefix(line, "export ")) {
			if strings.HasPrefix(f, "NATS_") {
				env = append(env, f)
			}
		}
	}
	return env
}

// getJobEnv is `cortex job get ID --json` with env's credentials.
func getJobEnv(t *testing.T, env []string, id string) jobView {
	t.Helper()
	return decodeJob(t, []byte(cortexOK(t, env, "job", "get", id, "--json")))
}

// Where the sandbox cannot run (here: no bwrap on PATH), cortex dev runs
// everything else, runs no job.code.python worker, and says why.
func TestDevSaysWhyNoCodeWorker(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dev := start(t, binCortex, []string{"PATH=" + t.TempDir()}, "dev", "--port", "-1", "--http-port", "0",
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--work-time", "0", "--log-level", "info")
	waitReady(t, dev)
	line := waitForText(t, dev, "code:")
	if !strings.Contains(line, "no job.code.python worker:") || !strings.Contains(line, "bwrap") || !strings.Contains(line, "docs/code-python.md") {
		t.Errorf("cortex dev without bubblewrap says %q; want no job.code.python worker, why (bwrap) and where to read", line)
	}
	dev.Interrupt(t)
	if code := dev.Wait(t, exitTimeout); code != 0 {
		t.Errorf("cortex dev exited %d after SIGINT, want 0", code)
	}
}

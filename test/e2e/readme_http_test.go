package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/systest"
)

// The README's "Over HTTP" walk-through, its curl commands run as written
// by a shell against ./bin/cortex dev. The only changes are the test
// machine's: dev's flags (devFlags: a free port for the gateway too), and
// localhost:8080 replaced by the address dev printed; <id> is the job the
// first command submitted.

// readmeHTTPCommands are the README's curl lines (in ```bash blocks) of the
// section "Over HTTP".
func readmeHTTPCommands(t *testing.T) []string {
	t.Helper()
	text := readme(t)
	_, sec, ok := strings.Cut(text, "\n## Over HTTP\n")
	if !ok {
		t.Fatal(`README.md has no section "Over HTTP"`)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	var out []string
	inBash := false
	for _, line := range strings.Split(sec, "\n") {
		switch {
		case line == "```bash":
			inBash = true
		case strings.HasPrefix(line, "```"):
			inBash = false
		case inBash && strings.Contains(line, "curl "):
			out = append(out, line)
		}
	}
	return out
}

// requireCurl finds curl: CI installs it, elsewhere its absence skips.
func requireCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed (.ci/run installs it)")
		}
		t.Skip("curl is not installed")
	}
}

// shell runs line with sh in dir and returns its standard output.
func shell(t *testing.T, dir, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Dir = dir
	cmd.Env = systest.BaseEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", line, err, out, stderr.String())
	}
	return string(out)
}

var devAPIRE = regexp.MustCompile(`HTTP API:\s+http://(127\.0\.0\.1:\d+)/v1`)

func TestREADMEHTTP(t *testing.T) {
	requireBinaries(t)
	requireCurl(t)
	t.Parallel()
	cmds := readmeHTTPCommands(t)
	want := []string{
		`curl -X POST localhost:8080/v1/jobs -d '{"topic":"job.echo"}'`,
		`curl localhost:8080/v1/jobs/<id>`,
		`curl -N localhost:8080/v1/jobs/<id>/events`,
	}
	if len(cmds) < len(want) {
		t.Fatalf("README's Over HTTP has curl commands %q, want %q first", cmds, want)
	}
	for i, w := range want {
		if cmds[i] != w {
			t.Fatalf("README's Over HTTP command %d is %q, want %q: update this test with the README", i+1, cmds[i], w)
		}
	}
	dir := t.TempDir()
	_, flags := devFlags(t, true)
	dev := runReadme(t, dir, "./bin/cortex dev", nil, flags...)
	waitReady(t, dev)
	m := devAPIRE.FindStringSubmatch(dev.Stdout())
	if m == nil {
		t.Fatalf("cortex dev printed no HTTP API address:\n%s", dev.Stdout())
	}
	addr := m[1]
	run := func(line, id string) string {
		line = strings.ReplaceAll(line, "localhost:8080", addr)
		line = strings.ReplaceAll(line, "<id>", id)
		return shell(t, dir, line)
	}

	var job struct {
		JobID string `json:"job_id"`
		State string `json:"state"`
		Topic string `json:"topic"`
	}
	out := run(cmds[0], "")
	if err := json.Unmarshal([]byte(out), &job); err != nil || job.JobID == "" || job.Topic != "job.echo" || job.State == "" {
		t.Fatalf("%s: %q (%v), want the job", cmds[0], out, err)
	}
	id := job.JobID
	out = run(cmds[1], id)
	if err := json.Unmarshal([]byte(out), &job); err != nil || job.JobID != id {
		t.Fatalf("%s: %q (%v), want job %s", cmds[1], out, err, id)
	}
	// The stream ends after the terminal state: COMPLETED last.
	out = run(cmds[2], id)
	var states []string
	for _, line := range strings.Split(out, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if err := json.Unmarshal([]byte(data), &job); err != nil || job.JobID != id {
			t.Fatalf("event %q: %v", data, err)
		}
		states = append(states, job.State)
	}
	if len(states) == 0 || states[len(states)-1] != "COMPLETED" {
		t.Errorf("%s: states %v, want COMPLETED last\n%s", cmds[2], states, out)
	}
}

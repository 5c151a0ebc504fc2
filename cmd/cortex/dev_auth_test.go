package main

import (
	"context"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/systest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// syncBuffer collects a logger's output while the test reads it.
type syncBuffer = logging.Buffer

// cortexCmd runs cortex with args and returns its output and error.
func cortexCmd(ctx context.Context, args ...string) (string, error) {
	root := newRootCommand()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// cortex dev --auth prints the credentials of three clients: the
// administrator (client) and tenant-a and tenant-b, bound to tenants a and
// b. With the administrator's, cortex submit runs a job to completion, and
// without them, or with others, it is refused. Each tenant's client sees,
// watches and cancels its own tenant's jobs only, and cannot submit for
// the other; the administrator sees both.
func TestDevAuth(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "dev")
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCommand()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"dev", "--auth", "--port", "-1", "--http-port", "0", "--api-addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--workers", "2", "--work-time", "0", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cortex dev --auth: %v", err)
		}
	})

	send := regexp.MustCompile(`submit --nats-url (\S+) --nats-user (\S+) --nats-password (\S+) --topic job.echo --wait`)
	var m []string
	systest.Poll(t, 15*time.Second, 10*time.Millisecond, "cortex dev --auth to print credentials", func() (bool, string) {
		m = send.FindStringSubmatch(out.String())
		return m != nil, "\n" + out.String()
	})
	url, user, password := m[1], m[2], m[3]
	if user != "client" || len(password) < 20 {
		t.Errorf("credentials %s/%s", user, password)
	}
	env, err := os.ReadFile(filepath.Join(dataDir, devCredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := "NATS_USER=client NATS_PASSWORD=" + password; !strings.Contains(string(env), want) {
		t.Errorf("%s: %q, want %q", devCredentialsFile, env, want)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, devCredentialsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, %v; want 0600", devCredentialsFile, fi.Mode(), err)
	}

	// dev prints the credentials before its scheduler has made the intake
	// stream: a submission sent before that finds nobody, so try again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := cortexCmd(context.Background(), "submit", "--nats-url", url, "--nats-user", user, "--nats-password", password,
			"--topic", "job.echo", "--wait", "--wait-timeout", "15s", "--request-timeout", "1s")
		if err == nil && strings.Contains(got, "COMPLETED") {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(fmt.Sprint(err), "no answer from a scheduler") {
			t.Fatalf("submit with the printed credentials: %v\n%s\ndev:\n%s", err, got, out.String())
		}
	}
	if got, err := cortexCmd(context.Background(), "job", "list", "--nats-url", url, "--nats-user", user, "--nats-password", password); err != nil || !strings.Contains(got, "COMPLETED") {
		t.Errorf("job list: %v\n%s", err, got)
	}

	for name, args := range map[string][]string{
		"no credentials":     {},
		"a wrong password":   {"--nats-user", user, "--nats-password", "wrong"},
		"a worker's account": {"--nats-user", "echo-1", "--nats-password", password},
	} {
		_, err := cortexCmd(context.Background(), append([]string{"job", "list", "--nats-url", url}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
			t.Errorf("job list with %s: %v, want the credentials refused", name, err)
		}
	}
	if _, err := cortexCmd(context.Background(), "dev", "--nats-user", "x", "--nats-password", "y"); err == nil || !strings.Contains(err.Error(), "--auth") {
		t.Errorf("dev with credential flags: %v, want an error pointing to --auth", err)
	}

	// The tenants' clients.
	tenantLine := regexp.MustCompile(`(tenant-[ab])\s+--nats-user (\S+) --nats-password (\S+)\s+\(tenant ([ab]) only; (\S+)\)`)
	found := tenantLine.FindAllStringSubmatch(out.String(), -1)
	if len(found) != 2 {
		t.Fatalf("cortex dev --auth printed %d tenant clients, want 2:\n%s", len(found), out.String())
	}
	as := map[string][]string{}
	for _, m := range found {
		if m[1] != m[2] || m[4] != m[1][len(m[1])-1:] {
			t.Errorf("tenant line %q", m[0])
		}
		as[m[1]] = []string{"--nats-url", url, "--nats-user", m[2], "--nats-password", m[3]}
		env, err := os.ReadFile(m[5])
		if err != nil || !strings.Contains(string(env), "NATS_USER="+m[2]+" NATS_PASSWORD="+m[3]) {
			t.Errorf("%s: %q, %v", m[5], env, err)
		}
		if fi, err := os.Stat(m[5]); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, %v; want 0600", m[5], fi.Mode(), err)
		}
	}
	admin := []string{"--nats-url", url, "--nats-user", user, "--nats-password", password}
	run := func(who []string, args ...string) (string, error) {
		return cortexCmd(context.Background(), append(args, who...)...)
	}
	if got, err := run(as["tenant-b"], "submit", "--topic", "job.echo", "--job-id", "b-job", "--env", "DB_SECRET=hunter2", "--wait", "--wait-timeout", "15s"); err != nil || !strings.Contains(got, "COMPLETED") {
		t.Fatalf("tenant-b submitting: %v\n%s", err, got)
	}
	if got, err := run(as["tenant-b"], "job", "get", "b-job"); err != nil || !strings.Contains(got, "tenant:") || !strings.Contains(got, " b\n") {
		t.Errorf("tenant-b getting its job: %v\n%s", err, got)
	}
	for _, args := range [][]string{{"job", "get", "b-job"}, {"job", "watch", "b-job"}, {"job", "cancel", "b-job"}, {"dlq", "retry", "b-job"}} {
		got, err := run(as["tenant-a"], args...)
		if err == nil || !strings.Contains(err.Error(), "not found") || strings.Contains(got, "hunter2") {
			t.Errorf("tenant-a: cortex %s: %v\n%s; want not found", strings.Join(args, " "), err, got)
		}
	}
	if got, err := run(as["tenant-a"], "job", "list"); err != nil || strings.Contains(got, "b-job") {
		t.Errorf("tenant-a's job list: %v\n%s", err, got)
	}
	if _, err := run(as["tenant-a"], "submit", "--topic", "job.echo", "--tenant", "b"); err == nil || !strings.Contains(err.Error(), `bound to tenant "a"`) {
		t.Errorf("tenant-a submitting for tenant b: %v", err)
	}
	if got, err := run(admin, "job", "list"); err != nil || !strings.Contains(got, "b-job") {
		t.Errorf("the administrator's job list: %v\n%s", err, got)
	}
}

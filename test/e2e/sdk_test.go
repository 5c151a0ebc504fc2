package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The programs of testdata/outside, built as a module of their own.
const (
	binOutsideWorker = "outside-worker"
	binOutsideClient = "outside-client"
)

var (
	outsideOnce sync.Once
	outsideErr  error
)

// requireOutside builds the binaries (requireBinaries) and then the
// programs of testdata/outside as a module outside this repository: its own
// go.mod, which requires github.com/cortex-os/core and replaces it with
// this checkout. They import only the public packages (pkg/...): an
// internal one would not compile there.
//
// The build is offline: GOPROXY=off, so every module must already be in the
// module cache, as it is once this repository has been built (or after
// go mod download). The outside module starts from this repository's
// go.sum, and -mod=mod lets go fill in its requirements from the cache.
func requireOutside(t *testing.T) {
	t.Helper()
	requireBinaries(t)
	outsideOnce.Do(func() { outsideErr = buildOutside(t.TempDir()) })
	if outsideErr != nil {
		t.Fatalf("e2e: building the outside module: %v", outsideErr)
	}
}

func buildOutside(dir string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	for _, prog := range []string{"worker", "client"} {
		src, err := os.ReadFile(filepath.Join(root, "test", "e2e", "testdata", "outside", prog, "main.go"))
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, prog), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, prog, "main.go"), src, 0o644); err != nil {
			return err
		}
	}
	gomod := fmt.Sprintf(`module example.com/outside

go 1.26.0

require github.com/cortex-os/core v0.0.0-00010101000000-000000000000

replace github.com/cortex-os/core => %q
`, root)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		return err
	}

	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race") // as the other binaries: see buildBinaries
	}
	for prog, bin := range map[string]string{"worker": binOutsideWorker, "client": binOutsideClient} {
		cmd := exec.Command(goBin, append(args, "-o", filepath.Join(binDir, bin), "./"+prog)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(),
			"GOFLAGS=-mod=mod -buildvcs=false", "GOPROXY=off", "GOSUMDB=off", "GOWORK=off", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(cmd.Args[1:], " "), dir, err, out)
		}
	}
	return nil
}

// A worker and a client written in a module of their own, against the
// public SDK only, work with CortexOS as `cortex dev` runs it: the client
// submits, the outside worker completes the job, the client reads its
// result.
func TestOutsideModule(t *testing.T) {
	requireOutside(t)
	t.Parallel()
	dev := start(t, binCortex, nil, "dev", "--port", "-1", "--http-port", "0",
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--work-time", "0", "--log-level", "info")
	url := devURLRE.FindStringSubmatch(dev.waitFor(t, startTimeout, "NATS listening on nats://…", devURLRE.MatchString))[1]
	dev.waitFor(t, startTimeout, "send a job", func(l string) bool { return strings.Contains(l, "send a job:") })

	w := start(t, binOutsideWorker, []string{"NATS_URL=" + url})
	workerID := strings.TrimPrefix(w.waitFor(t, startTimeout, "ready <id>", func(l string) bool { return strings.HasPrefix(l, "ready ") }), "ready ")

	c := start(t, binOutsideClient, []string{"NATS_URL=" + url})
	if code := c.wait(t, exitTimeout); code != 0 {
		t.Fatalf("the outside client exited %d\nstdout:\n%sstderr:\n%s", code, c.stdout.String(), c.stderr.String())
	}
	var line string
	for _, l := range c.lines() {
		if strings.HasPrefix(l, "result ") {
			line = l
		}
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[1] != "COMPLETED" || !strings.HasPrefix(f[2], "outside://") || !strings.HasSuffix(f[2], "/AFAR") || f[3] != workerID {
		t.Fatalf("the outside client printed %q, want result COMPLETED outside://<id>/AFAR %s", line, workerID)
	}
	if code := w.stop(t); code != 0 {
		t.Errorf("the outside worker exited %d after SIGINT, want 0", code)
	}
}

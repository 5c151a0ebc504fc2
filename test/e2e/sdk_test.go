package e2e

import (
	"fmt"
	"github.com/cortex-os/core/internal/systest"
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
	outsideDir  string // the outside programs' module, and their binaries
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
	root := systest.RepoRoot(t)
	outsideOnce.Do(func() {
		if outsideDir, outsideErr = os.MkdirTemp("", "cortex-outside-"); outsideErr == nil {
			outsideErr = buildOutside(root, outsideDir)
		}
	})
	if outsideErr != nil {
		t.Fatalf("e2e: building the outside module: %v", outsideErr)
	}
}

// ownReplaces is this repository's own replace directives (one per line),
// for the outside module: the offline build finds in the module cache only
// the versions this repository builds with (go.mod pins the vtprotobuf
// runtime with a replace, which applies to this module alone). Online, the
// outside module would build without them, fetching the required versions.
func ownReplaces(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "replace ") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func buildOutside(root, dir string) error {
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
%s`, root, ownReplaces(root))
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
	if systest.RaceEnabled() {
		args = append(args, "-race") // as the other binaries: see buildBinaries
	}
	for prog, bin := range map[string]string{"worker": binOutsideWorker, "client": binOutsideClient} {
		cmd := exec.Command(goBin, append(args, "-o", filepath.Join(dir, bin), "./"+prog)...)
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
	dev := start(t, binCortex, nil, "dev", "--port", "-1", "--http-port", "0", "--api-addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--work-time", "0", "--log-level", "info")
	url := devURLRE.FindStringSubmatch(dev.WaitForLine(t, startTimeout, "NATS listening on nats://…", devURLRE.MatchString))[1]
	dev.WaitForLine(t, startTimeout, "send a job", func(l string) bool { return strings.Contains(l, "send a job:") })

	outside := func(bin string) *systest.Proc {
		return systest.Start(t, systest.Process{Path: filepath.Join(outsideDir, bin), Env: []string{"NATS_URL=" + url}})
	}
	w := outside(binOutsideWorker)
	workerID := strings.TrimPrefix(w.WaitForLine(t, startTimeout, "ready <id>", func(l string) bool { return strings.HasPrefix(l, "ready ") }), "ready ")

	c := outside(binOutsideClient)
	if code := c.Wait(t, exitTimeout); code != 0 {
		t.Fatalf("the outside client exited %d\nstdout:\n%sstderr:\n%s", code, c.Stdout(), c.Stderr())
	}
	var line string
	for _, l := range c.Lines() {
		if strings.HasPrefix(l, "result ") {
			line = l
		}
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[1] != "COMPLETED" || !strings.HasPrefix(f[2], "outside://") || !strings.HasSuffix(f[2], "/AFAR") || f[3] != workerID {
		t.Fatalf("the outside client printed %q, want result COMPLETED outside://<id>/AFAR %s", line, workerID)
	}
	if code := w.Stop(t, exitTimeout); code != 0 {
		t.Errorf("the outside worker exited %d after SIGINT, want 0", code)
	}
}

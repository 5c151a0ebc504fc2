package systest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Binaries are commands of the repository, built once per test binary into a
// temporary directory. A test package declares them once and removes them in
// its TestMain:
//
//	var bins = systest.NewBinaries("./cmd/cortex-scheduler", "./cmd/cortex-worker-echo")
//
//	func TestMain(m *testing.M) { os.Exit(bins.Run(m)) }
//
// The binaries are built with -race exactly when the test binary is (go test
// -race, as `make test` and CI run it): the race-instrumented dependencies
// are then already in the build cache, so it costs only the links, and the
// concurrency of the processes is checked too, since a process that reports
// a data race fails its test (see [Start]). Without -race they are plain
// builds, so a plain go test stays fast.
type Binaries struct {
	targets []string

	once sync.Once
	dir  string
	err  error
}

// NewBinaries returns the binaries of targets, each relative to the
// repository's root: a main package ("./cmd/cortex") is built to its
// directory's name, a Go file ("./tools/scripts/send_echo_job.go") to the
// file's name without ".go".
func NewBinaries(targets ...string) *Binaries {
	return &Binaries{targets: targets}
}

// Require skips the test under -short, and on Windows (which cannot send
// the signals the tests stop processes with). Otherwise it builds the
// binaries the first time it is called and fails the test if that failed.
func (b *Binaries) Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binaries; skipped with -short")
	}
	if runtime.GOOS == "windows" {
		t.Skip("stops processes with POSIX signals, which Windows cannot send")
	}
	b.once.Do(func() { b.dir, b.err = b.build() })
	if b.err != nil {
		t.Fatalf("systest: building the binaries: %v", b.err)
	}
}

// Path is the path of the binary called name. It is valid after Require.
func (b *Binaries) Path(name string) string {
	return filepath.Join(b.dir, name)
}

// Run runs the tests and then removes the binaries; TestMain passes its
// result to os.Exit.
func (b *Binaries) Run(m *testing.M) int {
	code := m.Run()
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
	return code
}

// build builds the targets into a new temporary directory: the packages in
// one go build, each file in its own, all at once.
func (b *Binaries) build() (string, error) {
	root, err := findRepoRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "cortex-systest-bin-")
	if err != nil {
		return "", err
	}
	flags := []string{"build"}
	if raceEnabled {
		flags = append(flags, "-race")
	}
	var builds [][]string
	var pkgs []string
	for _, target := range b.targets {
		if strings.HasSuffix(target, ".go") {
			name := strings.TrimSuffix(filepath.Base(target), ".go")
			builds = append(builds, append(append([]string(nil), flags...), "-o", filepath.Join(dir, name), target))
			continue
		}
		pkgs = append(pkgs, target)
	}
	if len(pkgs) > 0 {
		// -o dir/ with several main packages writes each under its own name.
		builds = append(builds, append(append(append([]string(nil), flags...), "-o", dir+string(os.PathSeparator)), pkgs...))
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Go(func() {
			cmd := exec.Command(goBin, args...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// RaceEnabled reports whether the test binary runs with the race detector,
// and so whether the binaries built here are: a test that builds programs
// of its own builds them alike.
func RaceEnabled() bool { return raceEnabled }

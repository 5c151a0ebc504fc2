//go:build unix

package safety_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// A policy in three steps: v1 denies topics a and b; v2 denies a, b and c;
// v2Half, the first part of v2 as an in-place write leaves it for a moment,
// is a valid policy that denies only a: weaker than both.
const (
	policyV1 = "version: v1\nrules:\n  - {id: no-a, match: {topics: [a]}, decision: deny, reason: no a}\n  - {id: no-b, match: {topics: [b]}, decision: deny, reason: no b}\n"
	v2Half   = "version: v2\nrules:\n  - {id: no-a, match: {topics: [a]}, decision: deny, reason: no a}\n"
	v2Rest   = "  - {id: no-b, match: {topics: [b]}, decision: deny, reason: no b}\n  - {id: no-c, match: {topics: [c]}, decision: deny, reason: no c}\n"
)

// inForce says which of the policies above is in force, by version and rules.
func inForce(k *safety.Kernel) string {
	p := k.Policy()
	return p.Version + ":" + strings.Join(p.RuleIDs(), ",")
}

const (
	wantV1   = "v1:no-a,no-b"
	wantV2   = "v2:no-a,no-b,no-c"
	halfV2   = "v2:no-a"
	settleIn = 10 * time.Second // the fake clock's settle time
)

// A FIFO, a directory or a device at the policy path is refused without
// blocking, logged and counted once, and the running policy stays; the
// watcher goes on, and loads a regular file written there later. Loading
// such a path at start fails at once.
func TestWatchRefusesWhatIsNotARegularFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind string
		make func(t *testing.T, path string)
		want string
	}{
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "a named pipe (FIFO)"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "a directory"},
		{"device", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "a device"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "policy.yaml")
			writeFile(t, path, policyV1)
			var logs syncBuffer
			k, err := safety.New(safety.Config{PolicyFile: path, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				WatchInterval: 5 * time.Millisecond, SettleTime: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			tc.make(t, path)

			// At start: refused at once, whatever a read would do.
			if _, err := safety.New(safety.Config{PolicyFile: path, Logger: quiet}); !errors.Is(err, safety.ErrInvalidPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New on %s: %v; want a refusal naming %s", tc.kind, err, tc.want)
			}
			if _, err := safety.LoadPolicy(path); err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("LoadPolicy on %s: %v", tc.kind, err)
			}

			// Watched: refused once however many looks, never blocking.
			refused := k.Stats().Refused
			for range 5 {
				k.Poll(path)
			}
			if s := k.Stats(); s.Refused != refused+1 || inForce(k) != wantV1 {
				t.Fatalf("after 5 looks at a %s: refused %d (was %d), policy %s; want refused once more, v1 in force", tc.kind, s.Refused, refused, inForce(k))
			}
			if out := logs.String(); strings.Count(out, "not a regular file: "+tc.want) != 1 || !strings.Contains(out, "policy refused; the running policy stays in force") {
				t.Fatalf("log, want one refusal naming %s:\n%s", tc.want, out)
			}
			if v := check(t, k, &pb.JobRequest{Topic: "b"}); v.Decision != safety.Deny || v.PolicyVersion != "v1" {
				t.Fatalf("with a %s at the path: %+v; want v1's deny", tc.kind, v)
			}

			// The watcher keeps going: a regular file written there later
			// (renamed over the fifo, device link or removed directory) is
			// loaded.
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() {
				if err := k.Watch(ctx, path); err != nil {
					t.Errorf("Watch: %v", err)
				}
			})
			defer func() { cancel(); wg.Wait() }()
			if tc.kind == "directory" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
			writeAtomic(t, path, v2Half+v2Rest)
			systest.Eventually(t, waitFor, fmt.Sprintf("v2 to be loaded after the %s", tc.kind), func() bool { return inForce(k) == wantV2 })
			if out := logs.String(); !strings.Contains(out, "the policy file is readable again") {
				t.Errorf("log, want the file readable again:\n%s", out)
			}
		})
	}
}

// A FIFO at the path while Watch runs: Watch does not block on it (it
// still stops when told to), and picks up a regular file written later.
func TestWatchDoesNotBlockOnAFIFO(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV1)
	k, err := safety.New(safety.Config{PolicyFile: path, Logger: quiet, WatchInterval: 5 * time.Millisecond, SettleTime: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	refused := k.Stats().Refused
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Watch(ctx, "") }()
	systest.Eventually(t, waitFor, "the FIFO to be refused", func() bool { return k.Stats().Refused > refused })
	writeAtomic(t, path, v2Half+v2Rest)
	systest.Eventually(t, waitFor, "v2 to be loaded after the FIFO", func() bool { return inForce(k) == wantV2 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Watch did not return")
	}
}

// A slow in-place write, step by step on a fake clock: the first half of
// the new file (a valid policy, weaker than the old and the new) is seen,
// but never loaded, because the file changed again before it settled; the
// whole new file is loaded once it has stayed the same for SettleTime.
func TestWatchNeverLoadsAPartialWrite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV1)
	k, err := safety.New(safety.Config{PolicyFile: path, Logger: quiet, SettleTime: settleIn})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	k.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	look := func(want string) {
		t.Helper()
		k.Poll(path)
		if got := inForce(k); got != want {
			t.Fatalf("in force: %s; want %s", got, want)
		}
	}

	// The writer truncates the file and writes the first half.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(v2Half); err != nil {
		t.Fatal(err)
	}
	look(wantV1) // seen: waiting to settle
	advance(settleIn / 2)
	look(wantV1) // the same, but not for long enough
	if _, err := f.WriteString(v2Rest); err != nil {
		t.Fatal(err)
	}
	advance(settleIn / 2)
	look(wantV1) // changed again: the half is dropped, the whole waits
	advance(settleIn - time.Nanosecond)
	look(wantV1)
	advance(time.Nanosecond)
	look(wantV2) // settled
	if s := k.Stats(); s.Loads != 2 || s.PolicyChanges != 2 || s.Refused != 0 {
		t.Fatalf("stats %+v; want 2 loads (v1, v2), 2 changes seen, nothing refused", s)
	}
	// A broken content that settles is refused once, and the policy in
	// force stays.
	writeFile(t, path, "version: v3\ndefault: maybe\n")
	look(wantV2)
	advance(settleIn)
	look(wantV2)
	look(wantV2)
	if s := k.Stats(); s.Refused != 1 {
		t.Fatalf("Refused = %d; want 1", s.Refused)
	}
}

// The same on the real clock, through Watch: the writer writes the first
// half, waits until the watcher has seen it, then writes the rest. The half
// is never in force: the kernel loads v1 then the whole v2, nothing else.
func TestWatchSlowInPlaceWrite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV1)
	var logs syncBuffer
	k, err := safety.New(safety.Config{PolicyFile: path, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		WatchInterval: 2 * time.Millisecond, SettleTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Every policy in force, as the checks see it, while the write goes on.
	var (
		seenMu sync.Mutex
		seen   = map[string]bool{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = k.Watch(ctx, "") })
	wg.Go(func() {
		for ctx.Err() == nil {
			s := inForce(k)
			seenMu.Lock()
			seen[s] = true
			seenMu.Unlock()
			time.Sleep(100 * time.Microsecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	changes := k.Stats().PolicyChanges
	if _, err := f.WriteString(v2Half); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the watcher to see the half", func() bool { return k.Stats().PolicyChanges > changes })
	if _, err := f.WriteString(v2Rest); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the whole v2 to be loaded", func() bool { return inForce(k) == wantV2 })
	seenMu.Lock()
	defer seenMu.Unlock()
	if seen[halfV2] || k.Stats().Loads != 2 || strings.Contains(logs.String(), "rules=1 ") {
		t.Fatalf("the half-written policy was in force (seen %v, %d loads); log:\n%s", seen, k.Stats().Loads, logs.String())
	}
}

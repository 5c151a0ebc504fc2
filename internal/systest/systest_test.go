package systest_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
)

var bins = systest.NewBinaries("./internal/systest/testdata/logproc", "./internal/systest/testdata/say.go")

func TestMain(m *testing.M) { os.Exit(bins.Run(m)) }

// fakeTB records the failure of a helper that should fail, and ends the
// goroutine as t.Fatal does.
type fakeTB struct {
	testing.TB
	failure string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) {
	f.failure = fmt.Sprint(args...)
	runtime.Goexit()
}

// failure runs f with a fakeTB and returns how it failed ("" if it did not).
func failure(f func(t testing.TB)) string {
	ft := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ft)
	}()
	<-done
	return ft.failure
}

func TestParseAttrs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		line string
		want systest.Attrs
	}{
		{`time=2026-01-01T00:00:00Z level=DEBUG msg="job submitted" component=scheduler job_id=a-b topic=job.echo trace_id=c`,
			systest.Attrs{"time": "2026-01-01T00:00:00Z", "level": "DEBUG", "msg": "job submitted", "component": "scheduler",
				"job_id": "a-b", "topic": "job.echo", "trace_id": "c"}},
		{`level=WARN msg="bus dropped packet" err="proto: \"x\" = y" bytes=3`,
			systest.Attrs{"level": "WARN", "msg": "bus dropped packet", "err": `proto: "x" = y`, "bytes": "3"}},
		{`Sent job job_id=1 trace_id=2 topic=job.echo`,
			systest.Attrs{"job_id": "1", "trace_id": "2", "topic": "job.echo"}},
		{`msg="unterminated`, systest.Attrs{"msg": `"unterminated`}},
		{`msg="bad \q escape" x=1`, systest.Attrs{"msg": `"bad \q escape"`, "x": "1"}},
		{`empty= k=v`, systest.Attrs{"empty": "", "k": "v"}},
		{`no attributes here`, systest.Attrs{}},
		{``, systest.Attrs{}},
	}
	for _, c := range cases {
		if got := systest.ParseAttrs(c.line); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParseAttrs(%q)\n got %q\nwant %q", c.line, got, c.want)
		}
	}
}

func TestAttrsMatch(t *testing.T) {
	t.Parallel()
	a := systest.ParseAttrs(`level=DEBUG msg=dispatched component=scheduler job_id=j1 subject=job.echo worker_id= attempt=1`)
	cases := []struct {
		msg  string
		kv   []string
		want bool
	}{
		{"dispatched", nil, true},
		{"", []string{"job_id", "j1"}, true},
		{"dispatched", []string{"job_id", "j1", "subject", "job.echo", "attempt", "1"}, true},
		{"dispatched", []string{"component", "scheduler"}, true},
		{"dispatched", []string{"component", "safety"}, false},
		{"dispatched", []string{"job_id", "j2"}, false},
		{"submitted", []string{"job_id", "j1"}, false},
		{"dispatched", []string{"worker_id", ""}, true},  // empty
		{"dispatched", []string{"trace_id", ""}, true},   // absent
		{"dispatched", []string{"trace_id", "t"}, false}, // absent, wanted
		{"DISPATCHED", nil, false},                       // the words as written
	}
	for _, c := range cases {
		if got := a.Match(c.msg, c.kv...); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.msg, c.kv, got, c.want)
		}
	}
	if !a.Has("worker_id") || a.Has("trace_id") {
		t.Errorf("Has: worker_id %v (want true), trace_id %v (want false)", a.Has("worker_id"), a.Has("trace_id"))
	}
	defer func() {
		if recover() == nil {
			t.Errorf("Match with a key and no value did not panic")
		}
	}()
	a.Match("dispatched", "job_id")
}

func TestAttrsTime(t *testing.T) {
	t.Parallel()
	got, err := systest.ParseAttrs(`time=2026-01-02T03:04:05.123456789+02:00 msg=x`).Time()
	if want := time.Date(2026, 1, 2, 1, 4, 5, 123456789, time.UTC); err != nil || !got.Equal(want) {
		t.Errorf("Time() = %v, %v; want %v", got, err, want)
	}
	if _, err := systest.ParseAttrs(`msg=x`).Time(); err == nil {
		t.Errorf("Time() of a line without time= did not fail")
	}
}

func TestFindLogsReadsCompleteLines(t *testing.T) {
	t.Parallel()
	text := "level=INFO msg=\"job COMPLETED\" job_id=a\n" +
		"level=INFO msg=\"job COMPLETED\" job_id=b\n" +
		"level=INFO msg=\"say \\\"hi\\\"\" job_id=a\n" +
		"level=INFO msg=\"job COMPLETED\" job_id=a" // no newline yet: still being written
	if got := systest.Lines(text); len(got) != 3 {
		t.Errorf("Lines: %q, want the 3 complete lines", got)
	}
	if got := systest.FindLogs(text, "job COMPLETED", "job_id", "a"); len(got) != 1 {
		t.Errorf("FindLogs(job COMPLETED, job_id=a): %v, want the complete line only", got)
	}
	if got := systest.FindLogs(text, "job COMPLETED"); len(got) != 2 || got[0]["job_id"] != "a" || got[1]["job_id"] != "b" {
		t.Errorf("FindLogs(job COMPLETED): %v, want a then b", got)
	}
	// A message with characters the handler escapes is still found.
	if got := systest.FindLogs(text, `say "hi"`, "job_id", "a"); len(got) != 1 {
		t.Errorf(`FindLogs(say "hi"): %v, want one line`, got)
	}
	if got := systest.Lines("no newline"); got != nil {
		t.Errorf("Lines(no newline) = %q, want none", got)
	}
}

func TestEventually(t *testing.T) {
	t.Parallel()
	n := 0
	systest.Eventually(t, 10*time.Second, "the third call", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}

	msg := failure(func(t testing.TB) {
		systest.Eventually(t, 20*time.Millisecond, "pigs to fly", func() bool { return false })
	})
	if !strings.Contains(msg, "pigs to fly") || !strings.Contains(msg, "20ms") {
		t.Errorf("Eventually failed with %q, want the what and the timeout", msg)
	}
}

func TestPoll(t *testing.T) {
	t.Parallel()
	n := 0
	took := systest.Poll(t, 10*time.Second, time.Millisecond, "the second call", func() (bool, string) { n++; return n == 2, "" })
	if n != 2 || took <= 0 {
		t.Errorf("Poll: %d calls in %s, want 2 calls in some time", n, took)
	}
	msg := failure(func(t testing.TB) {
		systest.Poll(t, 20*time.Millisecond, time.Millisecond, "the job", func() (bool, string) { return false, "state=PENDING" })
	})
	if !strings.Contains(msg, "the job") || !strings.Contains(msg, "state=PENDING") {
		t.Errorf("Poll failed with %q, want the what and the last state", msg)
	}
}

func TestRepoRoot(t *testing.T) {
	t.Parallel()
	root := systest.RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "systest", "systest.go")); err != nil {
		t.Errorf("RepoRoot %s is not this repository's root: %v", root, err)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	port := systest.FreePort(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("listening on the free port %d: %v", port, err)
	}
	_ = l.Close()
}

func TestBaseEnv(t *testing.T) {
	t.Setenv("NATS_URL", "nats://example:4222")
	t.Setenv("CORTEX_LOG_LEVEL", "debug")
	t.Setenv("SYSTEST_KEPT", "1")
	env := systest.BaseEnv()
	for _, kv := range env {
		if strings.HasPrefix(kv, "NATS_URL=") || strings.HasPrefix(kv, "CORTEX_") {
			t.Errorf("BaseEnv has %s", kv)
		}
	}
	if !slices.Contains(env, "SYSTEST_KEPT=1") {
		t.Errorf("BaseEnv lost SYSTEST_KEPT=1")
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.Connect(t, url, "systest")
	if !b.Conn().IsConnected() {
		t.Errorf("not connected")
	}
	msg := failure(func(ft testing.TB) {
		systest.Connect(ft, "nats://127.0.0.1:"+fmt.Sprint(systest.FreePort(t)), "nobody")
	})
	if !strings.Contains(msg, "nobody") {
		t.Errorf("Connect to a closed port failed with %q, want the connection's name", msg)
	}
}

package echo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/echo"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

func TestWorkTimeSet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in       string
		min, max time.Duration
		str      string
	}{
		{"0", 0, 0, "0s"},
		{"0s", 0, 0, "0s"},
		{"250ms", 250 * time.Millisecond, 250 * time.Millisecond, "250ms"},
		{" 1s ", time.Second, time.Second, "1s"},
		{"100ms-500ms", 100 * time.Millisecond, 500 * time.Millisecond, "100ms-500ms"},
		{"0-1s", 0, time.Second, "0s-1s"},
		{"2s-2s", 2 * time.Second, 2 * time.Second, "2s"},
	} {
		var w echo.WorkTime
		if err := w.Set(tc.in); err != nil {
			t.Errorf("Set(%q) = %v", tc.in, err)
			continue
		}
		if w.Min != tc.min || w.Max != tc.max {
			t.Errorf("Set(%q) = [%s, %s], want [%s, %s]", tc.in, w.Min, w.Max, tc.min, tc.max)
		}
		if s := w.String(); s != tc.str {
			t.Errorf("Set(%q).String() = %q, want %q", tc.in, s, tc.str)
		}
		// String parses back to the same value.
		var again echo.WorkTime
		if err := again.Set(w.String()); err != nil || again != w {
			t.Errorf("Set(String()) of %q = %v, %v", tc.in, again, err)
		}
	}
}

func TestWorkTimeSetRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "abc", "5", "-5ms", "500ms-100ms", "1s-", "-", "1s-2s-3s", "1s-x"} {
		w := echo.WorkTime{Min: time.Second, Max: 2 * time.Second}
		if err := w.Set(in); err == nil {
			t.Errorf("Set(%q) succeeded with %v", in, w)
		} else if w.Min != time.Second || w.Max != 2*time.Second {
			t.Errorf("a failed Set(%q) changed the value to %v", in, w)
		}
	}
}

func TestWorkTimeTypeAndDefault(t *testing.T) {
	t.Parallel()
	var w echo.WorkTime
	if w.Type() == "" {
		t.Error("empty Type()")
	}
	if echo.DefaultWorkTime.Min != 100*time.Millisecond || echo.DefaultWorkTime.Max != 500*time.Millisecond {
		t.Errorf("DefaultWorkTime = %v, want the design document's 100ms-500ms", echo.DefaultWorkTime)
	}
}

func TestWorkTimePick(t *testing.T) {
	t.Parallel()
	for _, w := range []echo.WorkTime{
		{},
		{Min: 250 * time.Millisecond, Max: 250 * time.Millisecond},
		{Min: 100 * time.Millisecond, Max: 500 * time.Millisecond},
		{Min: 0, Max: 3},
	} {
		seen := map[time.Duration]bool{}
		for range 2000 {
			d := w.Pick()
			if d < w.Min || d > w.Max {
				t.Fatalf("%v.Pick() = %s, outside the range", w, d)
			}
			seen[d] = true
		}
		if w.Min == w.Max && len(seen) != 1 {
			t.Errorf("%v.Pick() varied: %v", w, seen)
		}
		if w.Max == 3 && len(seen) != 4 {
			t.Errorf("%v.Pick() over 2000 draws hit %d of the 4 values (both ends included)", w, len(seen))
		}
	}
	// A reversed range, which Set refuses, picks Min rather than panicking.
	if d := (echo.WorkTime{Min: time.Second, Max: time.Millisecond}).Pick(); d != time.Second {
		t.Errorf("reversed range Pick() = %s", d)
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	h := echo.Handler(echo.WorkTime{})
	out, err := h(context.Background(), worker.NewJob(&pb.JobRequest{JobId: "abc-123"}))
	if err != nil || out.Ptr != "memory://echo/abc-123" {
		t.Fatalf("handler = %q, %v; want memory://echo/abc-123", out.Ptr, err)
	}
	// With a short work time it still answers.
	ptr, err := echo.Echo(context.Background(), echo.WorkTime{Min: time.Millisecond, Max: 2 * time.Millisecond}, "x")
	if err != nil || ptr != "memory://echo/x" {
		t.Fatalf("Echo = %q, %v", ptr, err)
	}
}

func TestHandlerHonoursCancel(t *testing.T) {
	t.Parallel()
	h := echo.Handler(echo.WorkTime{Min: time.Hour, Max: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	type out struct {
		ptr string
		err error
	}
	done := make(chan out, 1)
	go func() {
		o, err := h(ctx, worker.NewJob(&pb.JobRequest{JobId: "slow"}))
		done <- out{o.Ptr, err}
	}()
	cancel()
	select {
	case o := <-done:
		if !errors.Is(o.err, context.Canceled) || o.ptr != "" {
			t.Fatalf("cancelled handler = %q, %v; want context.Canceled", o.ptr, o.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler ignored the cancellation")
	}
}

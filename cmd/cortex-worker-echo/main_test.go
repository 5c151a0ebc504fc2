package main

import (
	"io"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/echo"
)

// Placement flags are checked before anything connects.
func TestPlacementFlagsRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--capacity", "0"}, "--capacity 0: must be at least 1"},
		{[]string{"--capacity", "-3"}, "--capacity -3: must be at least 1"},
		{[]string{"--concurrency", "0"}, "--concurrency 0: must be at least 1"},
		{[]string{"--capacity", "2", "--concurrency", "3"}, "differ"},
		{[]string{"--capabilities", "gpu,"}, "empty capability"},
		{[]string{"--labels", "gpu"}, "not key=value"},
		{[]string{"--labels", "a=1,a=2"}, "twice"},
		{[]string{"--pool", "my pool"}, "--pool"},
	} {
		cmd := newCommand()
		cmd.SetArgs(tc.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error about %q", tc.args, err, tc.want)
		}
	}
}

func TestPlacementFlagsSettle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want int
		caps string
	}{
		{nil, 64, ""},
		{[]string{"--capacity", "4"}, 4, ""},
		{[]string{"--concurrency", "5"}, 5, ""},
		{[]string{"--capacity", "6", "--concurrency", "6"}, 6, ""},
		{[]string{"--capabilities", "gpu,python"}, 64, "echo,gpu,python"},
		{[]string{"--capabilities", "gpu,echo"}, 64, "gpu,echo"},
	} {
		cmd := newCommand()
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		f := cmd.Flags()
		concurrency, _ := f.GetInt("concurrency")
		capacity, _ := f.GetInt("capacity")
		pool, _ := f.GetString("pool")
		caps := f.Lookup("capabilities").Value.(*echo.Capabilities)
		if err := placementFlags(cmd, &concurrency, capacity, caps, pool); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if concurrency != tc.want || caps.String() != tc.caps {
			t.Errorf("%v: capacity %d, capabilities %q; want %d, %q", tc.args, concurrency, caps.String(), tc.want, tc.caps)
		}
	}
}

package echo_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/echo"
)

func TestCapabilitiesSet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []string
		want []string
		err  string
	}{
		{in: []string{"gpu"}, want: []string{"gpu"}},
		{in: []string{"gpu,python"}, want: []string{"gpu", "python"}},
		{in: []string{" gpu , python "}, want: []string{"gpu", "python"}},
		{in: []string{"gpu,gpu", "python,gpu"}, want: []string{"gpu", "python"}},
		{in: []string{""}, err: "empty capability"},
		{in: []string{"gpu,"}, err: "empty capability"},
		{in: []string{"a b"}, err: "blank"},
		{in: []string{"a=b"}, err: "'='"},
	} {
		var c echo.Capabilities
		var err error
		for _, s := range tc.in {
			if err = c.Set(s); err != nil {
				break
			}
		}
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Set(%q) = %v, want an error about %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || !slices.Equal(c, tc.want)):
			t.Errorf("Set(%q) = %v, %v; want %v", tc.in, c, err, tc.want)
		case tc.err == "" && c.String() != strings.Join(tc.want, ","):
			t.Errorf("String() = %q", c.String())
		}
	}
}

func TestLabelsSet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []string
		want map[string]string
		err  string
	}{
		{in: []string{"gpu=h100"}, want: map[string]string{"gpu": "h100"}},
		{in: []string{"gpu=h100,region=eu"}, want: map[string]string{"gpu": "h100", "region": "eu"}},
		{in: []string{" gpu = h100 ", "model=llama-3-8b"}, want: map[string]string{"gpu": "h100", "model": "llama-3-8b"}},
		{in: []string{"a=1,a=1"}, want: map[string]string{"a": "1"}},
		{in: []string{"gpu"}, err: "not key=value"},
		{in: []string{"=x"}, err: "empty key"},
		{in: []string{"gpu="}, err: "empty value"},
		{in: []string{"a=1,a=2"}, err: "twice"},
		{in: []string{"a=1", "a=2"}, err: "twice"},
		{in: []string{"a=b=c"}, err: "'='"},
		{in: []string{"a=b c"}, err: "blank"},
		{in: []string{"gpu=h100,"}, err: "not key=value"},
	} {
		var l echo.Labels
		var err error
		for _, s := range tc.in {
			if err = l.Set(s); err != nil {
				break
			}
		}
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Set(%q) = %v, want an error about %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || !maps.Equal(l, tc.want)):
			t.Errorf("Set(%q) = %v, %v; want %v", tc.in, l, err, tc.want)
		}
	}
	l := echo.Labels{"region": "eu", "gpu": "h100"}
	if got := l.String(); got != "gpu=h100,region=eu" {
		t.Errorf("String() = %q", got)
	}
}

func TestValidatePool(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "gpu", "gpu-eu_1"} {
		if err := echo.ValidatePool(ok); err != nil {
			t.Errorf("ValidatePool(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"my pool", "job.echo", "gpu*"} {
		if err := echo.ValidatePool(bad); err == nil {
			t.Errorf("ValidatePool(%q) accepted", bad)
		}
	}
}

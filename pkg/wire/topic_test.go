package wire_test

import (
	"errors"
	"testing"

	"github.com/cortex-os/core/pkg/wire"
)

// ValidateTopic is the scheduler's own check (internal/scheduler delegates
// to it; FuzzValidateTopic there holds it to its rule), exported so that a
// caller can check a topic before submitting.
func TestValidateTopic(t *testing.T) {
	t.Parallel()
	for topic, want := range map[string]error{
		"job.echo":        nil,
		"job.code.python": nil,
		"":                wire.ErrEmptyTopic,
		"sys.job.submit":  wire.ErrInvalidTopic,
		"echo":            wire.ErrInvalidTopic,
		"job.":            wire.ErrInvalidTopic,
		"job.*":           wire.ErrInvalidTopic,
		"job.echo.>":      wire.ErrInvalidTopic,
		"job..x":          wire.ErrInvalidTopic,
		"job.a b":         wire.ErrInvalidTopic,
	} {
		if err := wire.ValidateTopic(topic); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("ValidateTopic(%q) = %v, want %v", topic, err, want)
		}
	}
}

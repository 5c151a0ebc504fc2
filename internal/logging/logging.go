// Package logging builds the slog loggers of CortexOS binaries. Messages carry
// the component prefixes of the design document ([SCHEDULER], [SAFETY],
// [WORKER echo]); details are key=value attributes.
package logging

import (
	"io"
	"log/slog"
)

// New returns a text logger at level writing to w.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// Discard is a logger that writes nothing, for benchmarks.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

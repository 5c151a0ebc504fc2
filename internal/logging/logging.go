// Package logging builds the slog loggers of CortexOS binaries. Messages carry
// the component prefixes of the design document ([SCHEDULER], [SAFETY],
// [WORKER echo]); details are key=value attributes.
package logging

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
)

// New returns a text logger at level writing to w.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// Discard is a logger that writes nothing, for benchmarks.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Buffer collects log output (or any text) written by several goroutines
// while another reads it: the tests' log capture.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Package logging builds the slog loggers of CortexOS binaries. Messages are
// plain and stable; the component that logs is an attribute
// (component=scheduler, component=safety, component=worker kind=echo), and
// details are key=value attributes. The human handler of `cortex dev`
// (NewDev) renders the component as the design document's prefixes
// ([SCHEDULER], [SAFETY], [WORKER echo]).
package logging

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Attribute keys and component names of the CortexOS loggers.
const (
	// ComponentKey names the part of CortexOS that logs a line.
	ComponentKey = "component"
	// KindKey names a worker's kind (with component=worker).
	KindKey = "kind"

	ComponentScheduler = "scheduler"
	ComponentSafety    = "safety"
	ComponentWorker    = "worker"
	ComponentGateway   = "gateway"
	ComponentBus       = "bus"
	ComponentJobStore  = "jobstore"
)

// New returns a text logger at level writing to w.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// NewDev returns the human text logger of `cortex dev`: New's key=value
// lines, whose messages start with the component's prefix of the design
// document: component=scheduler (or scheduler.<part>) as "[SCHEDULER] ",
// component=safety as "[SAFETY] ", component=worker kind=echo as
// "[WORKER echo] ". The attributes stay on the line.
func NewDev(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(&devHandler{next: slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})})
}

// Prefix is the design document's prefix of a component ("" for none).
func Prefix(component, kind string) string {
	if i := strings.IndexByte(component, '.'); i >= 0 {
		component = component[:i] // scheduler.dispatch is the scheduler
	}
	switch component {
	case "":
		return ""
	case ComponentWorker:
		if kind != "" {
			return "[WORKER " + kind + "] "
		}
		return "[WORKER] "
	default:
		return "[" + strings.ToUpper(component) + "] "
	}
}

// devHandler prefixes each message with its component's prefix.
type devHandler struct {
	next            slog.Handler
	component, kind string // from WithAttrs
	grouped         bool   // attributes added after WithGroup are not the component's
}

func (h *devHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *devHandler) Handle(ctx context.Context, r slog.Record) error {
	component, kind := h.component, h.kind
	if !h.grouped {
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case ComponentKey:
				component = a.Value.String()
			case KindKey:
				kind = a.Value.String()
			}
			return true
		})
	}
	if p := Prefix(component, kind); p != "" {
		nr := slog.NewRecord(r.Time, r.Level, p+r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
		r = nr
	}
	return h.next.Handle(ctx, r)
}

func (h *devHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	if !h.grouped {
		for _, a := range attrs {
			switch a.Key {
			case ComponentKey:
				c.component = a.Value.String()
			case KindKey:
				c.kind = a.Value.String()
			}
		}
	}
	return &c
}

func (h *devHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.grouped = c.grouped || name != ""
	return &c
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

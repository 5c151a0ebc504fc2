package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/wire"
)

// A publish whose subject would not fit in the server's protocol line is
// refused before it is sent (sent, it makes the server close the connection
// for good: issue 12, finding 2), and so are an invalid subject and an
// oversize packet: each wraps wire.ErrUnpublishable, and the connection goes
// on carrying everything else.
func TestUnpublishableIsRefusedAndTheConnectionLives(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url, MaxPacketBytes: 4096})
	var got collector
	subscribe(t, b, "job.echo", "", got.handle)

	long := "job." + strings.Repeat("a", 5000)
	big := jobPacket("big")
	big.GetJobRequest().ContextPtr = strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"long subject", b.Publish(long, jobPacket("j")), bus.ErrSubjectTooLong},
		{"long reply", b.PublishRequest("job.echo", "_INBOX."+strings.Repeat("r", 5000), jobPacket("j")), bus.ErrSubjectTooLong},
		{"long request subject", func() error {
			_, err := b.Request(context.Background(), long, jobPacket("j"))
			return err
		}(), bus.ErrSubjectTooLong},
		{"long submission subject", b.PublishReplyTo(long, jobPacket("j"), "_INBOX.x"), bus.ErrSubjectTooLong},
		{"blank in subject", b.Publish("job.a b", jobPacket("j")), nats.ErrBadSubject},
		{"too large", b.Publish("job.echo", big), bus.ErrTooLarge},
	} {
		if !errors.Is(tc.err, wire.ErrUnpublishable) || !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v and wire.ErrUnpublishable", tc.name, tc.err, tc.want)
		}
		if tc.err != nil && len(tc.err.Error()) > 300 {
			t.Errorf("%s: an error of %d bytes repeats the subject", tc.name, len(tc.err.Error()))
		}
	}
	// At the bound it goes out.
	limit := bus.DefaultMaxControlLine - 64
	if err := b.Publish("job."+strings.Repeat("a", limit-4), jobPacket("at-bound")); err != nil {
		t.Errorf("a subject at the bound: %v", err)
	}
	if err := b.Publish("job.echo", jobPacket("after")); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the packet after the refusals", func() bool { return got.len() == 1 })
	if b.CloseError() != nil || b.Conn().IsClosed() {
		t.Errorf("the connection is closed: %v", b.CloseError())
	}
}

// When the server closes the connection for good, Closed is closed and
// CloseError says why; after Close, CloseError is nil.
func TestClosedByTheServerIsReported(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	var logs syncBuffer
	b := systest.ConnectWith(t, bus.Config{URL: url, Logger: testLogger(&logs)})
	// Past the bus's check, straight on the connection: what the bus
	// refuses to send.
	if err := b.Conn().Publish("job."+strings.Repeat("a", 5000), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Closed():
	case <-time.After(waitFor):
		t.Fatal("the connection was not closed")
	}
	err := b.CloseError()
	if !errors.Is(err, bus.ErrClosedByServer) || !strings.Contains(strings.ToLower(err.Error()), "maximum control line") {
		t.Errorf("CloseError = %v, want ErrClosedByServer saying maximum control line exceeded", err)
	}
	systest.Eventually(t, waitFor, "the close logged", func() bool { return strings.Contains(logs.String(), "closed by the server") })

	mine := systest.ConnectWith(t, bus.Config{URL: url})
	mine.Close()
	<-mine.Closed()
	if err := mine.CloseError(); err != nil {
		t.Errorf("CloseError after Close = %v, want nil", err)
	}
}

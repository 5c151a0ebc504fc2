package system

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// retryCreate runs create (a stream or bucket created or updated) again
// while it times out, up to six tries (of 2 s, 4 s, then 5 s). In a cluster, two
// processes creating the same replicated stream at the same moment (two
// schedulers starting together) may both wait past the request timeout;
// a later try finds the stream there and updates it. A peer that fails to
// make the stream's store (JetStream's error 10049, seen while a new
// cluster settles) is tried again too.
func retryCreate(ctx context.Context, create func(context.Context) error) error {
	var err error
	for try := range 6 {
		actx, cancel := context.WithTimeout(ctx, min(time.Duration(try+1)*2*time.Second, 5*time.Second))
		err = create(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !timedOut(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(50+rand.IntN(450)) * time.Millisecond):
		}
	}
	return err
}

// jsErrStreamCreate is JetStream's "error creating store for stream" (and
// other failures of a peer to create it).
const jsErrStreamCreate jetstream.ErrorCode = 10049

func timedOut(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jsErrStreamCreate {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoResponders)
}

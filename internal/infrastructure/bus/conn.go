package bus

import (
	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/logging"
)

// FromConn returns a NatsBus on a connection the caller made and keeps, as
// the public SDK (pkg/client, pkg/worker) takes one: packets are capped,
// decoded, checked and their handlers' panics contained as on a bus from
// Connect, but nothing is installed on nc (its handlers stay the caller's,
// so the bus counts no reconnects or asynchronous errors) and Close leaves
// nc open: closing it is the caller's business.
func FromConn(nc *nats.Conn, cfg Config) *NatsBus {
	cfg.setDefaults()
	if nc != nil {
		cfg.URL = nc.ConnectedUrlRedacted()
	}
	return &NatsBus{nc: nc, cfg: cfg, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentBus), closed: make(chan struct{}), borrowed: true}
}

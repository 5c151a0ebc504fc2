// Package embeddednats runs the official NATS server inside a CortexOS process:
// `cortex dev`, `cortex bench` and the tests use it so that nothing but Go is
// needed to run the whole system.
package embeddednats

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	// Host to listen on. Default 127.0.0.1.
	Host string
	// Port for clients; -1 picks a free port. Default 4222.
	Port int
	// HTTPPort serves the monitoring endpoints (/varz, /jsz, ...); 0 disables
	// them, -1 picks a free port.
	HTTPPort int
	// JetStream enables JetStream with its files under StoreDir.
	JetStream bool
	// StoreDir is JetStream's data directory. Required with JetStream.
	StoreDir string
	// SyncAlways makes JetStream fsync every write (see docs/guarantees.md).
	SyncAlways bool
	// Debug turns on the server's own logging to stderr.
	Debug bool
	// ReadyTimeout bounds the wait for the server to accept connections. Default 10s.
	ReadyTimeout time.Duration
}

// Start starts a server and waits until it accepts connections. The caller
// owns it: Shutdown, then WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 4222
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	if cfg.JetStream && cfg.StoreDir == "" {
		return nil, errors.New("embeddednats: JetStream needs a StoreDir")
	}
	opts := &server.Options{
		ServerName: "cortex-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		HTTPHost:   cfg.Host,
		HTTPPort:   cfg.HTTPPort,
		JetStream:  cfg.JetStream,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      !cfg.Debug,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embeddednats: %w", err)
	}
	if cfg.Debug {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(cfg.ReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embeddednats: server not ready on %s:%d within %s (port in use?)", cfg.Host, cfg.Port, cfg.ReadyTimeout)
	}
	return srv, nil
}

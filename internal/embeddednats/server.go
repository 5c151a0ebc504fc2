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

	// ConfigFile is a nats-server configuration file (such as
	// config/nats-auth.conf: accounts, users and their permissions, TLS).
	// The fields above override what it says about where to listen and
	// JetStream.
	ConfigFile string
	// Users, when set, are the only users the server admits, each with its
	// permissions (see NewDevAuth).
	Users []*server.User
	// Configure, when set, is called with the server's options last, to set
	// what the fields above do not (TLS, say).
	Configure func(*server.Options)
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
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("embeddednats: %w", err)
		}
	}
	if opts.ServerName == "" {
		opts.ServerName = "cortex-embedded"
	}
	opts.Host, opts.Port = cfg.Host, cfg.Port
	opts.HTTPHost, opts.HTTPPort = cfg.Host, cfg.HTTPPort
	opts.JetStream = opts.JetStream || cfg.JetStream
	if cfg.StoreDir != "" {
		opts.StoreDir = cfg.StoreDir
	}
	opts.SyncAlways = opts.SyncAlways || cfg.SyncAlways
	opts.NoSigs, opts.NoLog = true, !cfg.Debug
	if cfg.Users != nil {
		opts.Users = cfg.Users
	}
	if cfg.Configure != nil {
		cfg.Configure(opts)
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

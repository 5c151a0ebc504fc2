// Package config loads CortexOS configuration: a YAML file (config/local.yaml
// in development), then environment variables, which win.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/tenancy"
)

// DefaultPath is the development config the binaries read when no --config
// is given and the file exists.
const DefaultPath = "config/local.yaml"

// DefaultNatsURL is used when neither the file nor NATS_URL sets one.
const DefaultNatsURL = "nats://localhost:4222"

// Environment variables that override the file.
const (
	EnvNatsURL  = "NATS_URL"
	EnvLogLevel = "CORTEX_LOG_LEVEL"
)

// Environment variables that set the NATS credentials (the nats section),
// overriding the file.
const (
	EnvNatsUser          = "NATS_USER"
	EnvNatsPassword      = "NATS_PASSWORD"
	EnvNatsToken         = "NATS_TOKEN"
	EnvNatsNKeySeed      = "NATS_NKEY_SEED"
	EnvNatsCreds         = "NATS_CREDS"
	EnvNatsCA            = "NATS_CA"
	EnvNatsCert          = "NATS_CERT"
	EnvNatsKey           = "NATS_KEY"
	EnvNatsTLSServerName = "NATS_TLS_SERVER_NAME"
	EnvNatsInboxPrefix   = "NATS_INBOX_PREFIX"
)

// CredentialEnv lists the credential variables, each with the field it sets.
func CredentialEnv(c *bus.Credentials) map[string]*string {
	return map[string]*string{
		EnvNatsUser: &c.User, EnvNatsPassword: &c.Password, EnvNatsToken: &c.Token,
		EnvNatsNKeySeed: &c.NKeySeed, EnvNatsCreds: &c.Creds,
		EnvNatsCA: &c.CA, EnvNatsCert: &c.Cert, EnvNatsKey: &c.Key,
		EnvNatsTLSServerName: &c.TLSServerName, EnvNatsInboxPrefix: &c.InboxPrefix,
	}
}

// Config is the configuration shared by every CortexOS binary.
type Config struct {
	// NatsURL of the NATS server(s), comma separated.
	NatsURL string `yaml:"nats_url"`
	// NATS are the credentials the binaries connect with: user and
	// password, token, NKey seed file, creds file, TLS and mutual TLS (see
	// docs/security.md). Empty: none.
	NATS bus.Credentials `yaml:"nats"`
	// LogLevel is debug, info, warn or error. Per-job events are logged at
	// debug, so production runs at info see no per-job lines.
	LogLevel string `yaml:"log_level"`
	// Scheduler settings; zero values take the scheduler's defaults.
	Scheduler Scheduler `yaml:"scheduler"`
	// Worker settings for the workers CortexOS ships (the echo worker).
	Worker Worker `yaml:"worker"`
	// Safety configures admission: the policy and where it is decided.
	Safety Safety `yaml:"safety"`
	// Placement names pools, tenants and strategies (docs/scheduling.md).
	// Absent: every topic is placed by the naive strategy, as in the design
	// document.
	Placement *placement.Config `yaml:"placement"`
	// Clients binds client identities (NATS users) to tenants and marks
	// administrators; with require_identity the scheduler answers only
	// bound identities (docs/security.md). Read strictly: an error names
	// its line. Absent: nobody bound, no identity required.
	Clients *tenancy.Config `yaml:"clients"`
	// Blobs configures the blob store of job inputs and results
	// (docs/blobs.md), whose bucket the scheduler creates.
	Blobs Blobs `yaml:"blobs"`
}

// Blobs configures the blob store bucket (docs/blobs.md). Zero values are
// the defaults.
type Blobs struct {
	// Bucket is the JetStream object store bucket. Default CORTEX_BLOBS.
	Bucket string `yaml:"bucket"`
	// MaxBytes caps the whole bucket; 0 unlimited. (Each object is capped
	// by its reader and writer, 64 MiB by default.)
	MaxBytes int64 `yaml:"max_bytes"`
	// TTL drops objects older than this. Default 0: kept for ever, as the
	// job store keeps job records; set it with any pruning of job records.
	TTL time.Duration `yaml:"ttl"`
	// Replicas in a cluster, as for the job store. Default 1.
	Replicas int `yaml:"replicas"`
}

// Safety configures the safety kernel (docs/policy.md).
type Safety struct {
	// Policy is the policy file, reloaded when it changes. Empty: the
	// shipped default policy (config/policy.yaml's rules, built in).
	Policy string `yaml:"policy"`
	// Remote: the scheduler asks a cortex safety service over NATS instead
	// of deciding in-process.
	Remote bool `yaml:"remote"`
	// Timeout of a remote check. Default 500ms.
	Timeout time.Duration `yaml:"timeout"`
	// Unavailable is what a job becomes when a remote kernel does not
	// answer in time: pending (the default: it waits, and is checked again
	// before dispatch) or deny. Either way it fails closed.
	Unavailable string `yaml:"unavailable"`
}

// Scheduler configures the scheduler. See docs/state_machine.md for the timers.
type Scheduler struct {
	// Store is where jobs are recorded: jetstream (a key-value bucket, and
	// durable intake), memory (this process only), or auto: jetstream when
	// the server has JetStream. Default auto.
	Store string `yaml:"store"`
	// AckTimeout: how long a dispatch waits for the worker's confirmation.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// LeaseInterval: the heartbeat interval expected of a worker holding jobs.
	LeaseInterval time.Duration `yaml:"lease_interval"`
	// LeaseMisses: heartbeats a worker holding jobs may miss before its jobs
	// are dispatched again.
	LeaseMisses int `yaml:"lease_misses"`
	// MaxAttempts for jobs that set none.
	MaxAttempts int `yaml:"max_attempts"`
	// Timeout per attempt for jobs that set none.
	Timeout time.Duration `yaml:"timeout"`
	// TTL from submission for jobs that set none; a job not finished by then
	// ends TIMEOUT.
	TTL time.Duration `yaml:"ttl"`
	// RequireWorkerIdentity refuses heartbeats and results that do not name
	// their worker in the subject (the bare sys.heartbeat.<kind> and
	// sys.job.result of the design document). Heartbeats and results whose
	// subject names another worker than their worker_id are refused either
	// way. With it, a result that asks for an answer is answered only in its
	// worker's own inbox (_INBOX.<worker id>.). Turn it on where the server's
	// permissions tie each worker to its subjects (docs/security.md).
	RequireWorkerIdentity bool `yaml:"require_worker_identity"`
	// Results: which results the scheduler accepts (docs/security.md).
	Results Results `yaml:"results"`
	// Replicas is the replication factor of every stream and bucket the
	// scheduler creates (jobs, intake, dead letters, blobs, the leader
	// lease). 0: 3 when the server reports a cluster of at least three
	// servers, else 1 (docs/guarantees.md).
	Replicas int `yaml:"replicas"`
	// LeaderElection: replicas elect one active scheduler through a lease
	// in the CORTEX_LEADER key-value bucket; the others stand by and take
	// over when it lapses (docs/ARCHITECTURE.md). Turn it on wherever
	// more than one scheduler runs.
	LeaderElection bool `yaml:"leader_election"`
	// LeaderLease is how long the leader's lease lasts unrenewed. Default 4s.
	LeaderLease time.Duration `yaml:"leader_lease"`
}

// Results configures which results the scheduler accepts.
type Results struct {
	// TrustDocumentWorkers: apply results that name no attempt (attempt 0:
	// workers built from the design document, which neither confirm nor
	// report their attempt). Absent: true without require_worker_identity,
	// false with it.
	TrustDocumentWorkers *bool `yaml:"trust_document_workers"`
}

// Worker configures the shipped workers.
type Worker struct {
	// HeartbeatInterval while idle. Default 5s.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// LeaseInterval: heartbeat interval while holding jobs. Default 500ms.
	LeaseInterval time.Duration `yaml:"lease_interval"`
	// ShutdownGrace: how long in-flight jobs may finish after SIGTERM.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// NamedSubjects: heartbeats on sys.heartbeat.<kind>.<id> and results on
	// sys.job.result.<id>, as a server that holds each worker to its
	// subjects requires (docs/security.md). The shipped workers do so
	// whenever NATS credentials are set, whatever this says.
	NamedSubjects bool `yaml:"named_subjects"`
}

// Store modes.
const (
	StoreAuto      = "auto"
	StoreMemory    = "memory"
	StoreJetStream = "jetstream"
)

// Default returns the configuration used when nothing is set.
func Default() *Config {
	return &Config{NatsURL: DefaultNatsURL, LogLevel: "info"}
}

// Load reads the YAML file at path (none when path is empty), applies the
// environment and validates the result. Unknown keys and values that do not
// parse are errors that name the file and line.
func Load(path string) (*Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decode(data, cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	cfg.applyEnv(os.LookupEnv)
	if err := cfg.Validate(); err != nil {
		if path != "" {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// LoadDefault is Load for binaries: an explicit path must exist; with none,
// DefaultPath is read if it exists, and defaults are used otherwise.
func LoadDefault(path string) (*Config, error) {
	if path == "" {
		if _, err := os.Stat(DefaultPath); err == nil {
			path = DefaultPath
		}
	}
	return Load(path)
}

func decode(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func (c *Config) applyEnv(lookup func(string) (string, bool)) {
	if v, ok := lookup(EnvNatsURL); ok && v != "" {
		c.NatsURL = v
	}
	if v, ok := lookup(EnvLogLevel); ok && v != "" {
		c.LogLevel = v
	}
	for name, field := range CredentialEnv(&c.NATS) {
		if v, ok := lookup(name); ok && v != "" {
			*field = v
		}
	}
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.NatsURL) == "" {
		return errors.New("nats_url is empty")
	}
	for _, u := range strings.Split(c.NatsURL, ",") {
		parsed, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			return fmt.Errorf("nats_url %q: %w", u, err)
		}
		switch parsed.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("nats_url %q: scheme must be nats, tls, ws or wss", u)
		}
		if parsed.Host == "" {
			return fmt.Errorf("nats_url %q: no host", u)
		}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return err
	}
	if err := c.NATS.Validate(); err != nil {
		return err
	}
	switch c.Scheduler.Store {
	case "", StoreAuto, StoreMemory, StoreJetStream:
	default:
		return fmt.Errorf("scheduler.store %q: want auto, memory or jetstream", c.Scheduler.Store)
	}
	for name, d := range map[string]time.Duration{
		"scheduler.ack_timeout": c.Scheduler.AckTimeout, "scheduler.lease_interval": c.Scheduler.LeaseInterval,
		"scheduler.timeout": c.Scheduler.Timeout, "worker.heartbeat_interval": c.Worker.HeartbeatInterval,
		"worker.lease_interval": c.Worker.LeaseInterval, "worker.shutdown_grace": c.Worker.ShutdownGrace,
	} {
		if d < 0 {
			return fmt.Errorf("%s %s: must not be negative", name, d)
		}
	}
	switch c.Safety.Unavailable {
	case "", "pending", "deny":
	default:
		return fmt.Errorf("safety.unavailable %q: want pending or deny", c.Safety.Unavailable)
	}
	if c.Safety.Timeout < 0 {
		return fmt.Errorf("safety.timeout %s: must not be negative", c.Safety.Timeout)
	}
	if c.Placement != nil {
		if err := c.Placement.Validate(); err != nil {
			return fmt.Errorf("placement: %w", err)
		}
	}
	if c.Clients != nil {
		if err := c.Clients.Validate(); err != nil {
			return fmt.Errorf("clients: %w", err)
		}
	}
	if c.Blobs.MaxBytes < 0 || c.Blobs.TTL < 0 || c.Blobs.Replicas < 0 {
		return errors.New("blobs.max_bytes, blobs.ttl and blobs.replicas must not be negative")
	}
	if c.Blobs.Bucket != "" && strings.Trim(c.Blobs.Bucket, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
		return fmt.Errorf("blobs.bucket %q: letters, digits, - and _ only", c.Blobs.Bucket)
	}
	if c.Scheduler.Replicas < 0 || c.Scheduler.Replicas > 5 || c.Scheduler.LeaderLease < 0 {
		return errors.New("scheduler.replicas must be 0 (auto) to 5, scheduler.leader_lease not negative")
	}
	if c.Scheduler.LeaseMisses < 0 || c.Scheduler.MaxAttempts < 0 {
		return errors.New("scheduler.lease_misses and scheduler.max_attempts must not be negative")
	}
	return nil
}

// ParseLevel turns a log_level setting into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

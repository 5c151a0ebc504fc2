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

	"gopkg.in/yaml.v3"
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

// Config is the configuration shared by every CortexOS binary.
type Config struct {
	// NatsURL of the NATS server(s), comma separated.
	NatsURL string `yaml:"nats_url"`
	// LogLevel is debug, info, warn or error. Per-job events are logged at
	// debug, so production runs at info see no per-job lines.
	LogLevel string `yaml:"log_level"`
}

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

package config

import (
	"github.com/spf13/pflag"

	"github.com/cortex-os/core/internal/infrastructure/bus"
)

// The credential flags every binary and every cortex command takes, each
// with the field of bus.Credentials it sets. They win over the environment
// and the config file.
var credentialFlags = []struct {
	name, usage string
	field       func(*bus.Credentials) *string
}{
	{"nats-user", "NATS user (with --nats-password; overrides NATS_USER and nats.user)", func(c *bus.Credentials) *string { return &c.User }},
	{"nats-password", "NATS password (overrides NATS_PASSWORD; prefer the variable: flags show in ps)", func(c *bus.Credentials) *string { return &c.Password }},
	{"nats-token", "NATS token (overrides NATS_TOKEN; prefer the variable: flags show in ps)", func(c *bus.Credentials) *string { return &c.Token }},
	{"nats-nkey", "file with an NKey user seed (overrides NATS_NKEY_SEED)", func(c *bus.Credentials) *string { return &c.NKeySeed }},
	{"nats-creds", "creds file: user JWT and seed (overrides NATS_CREDS)", func(c *bus.Credentials) *string { return &c.Creds }},
	{"nats-ca", "PEM file of the CAs the server's certificate must chain to; turns TLS on (overrides NATS_CA)", func(c *bus.Credentials) *string { return &c.CA }},
	{"nats-cert", "client certificate (PEM) for mutual TLS, with --nats-key (overrides NATS_CERT)", func(c *bus.Credentials) *string { return &c.Cert }},
	{"nats-key", "client certificate's key (PEM) for mutual TLS (overrides NATS_KEY)", func(c *bus.Credentials) *string { return &c.Key }},
	{"nats-tls-server-name", "name the server's certificate must carry, if not the URL's host (overrides NATS_TLS_SERVER_NAME)", func(c *bus.Credentials) *string { return &c.TLSServerName }},
	{"nats-inbox-prefix", `prefix of this connection's answer subjects (default "_INBOX.<user>" with a user; overrides NATS_INBOX_PREFIX)`, func(c *bus.Credentials) *string { return &c.InboxPrefix }},
}

// RegisterCredentialFlags adds the --nats-* credential flags to f (a
// command's flags, or a root command's persistent flags, which its
// subcommands share).
func RegisterCredentialFlags(f *pflag.FlagSet) {
	for _, fl := range credentialFlags {
		f.String(fl.name, "", fl.usage)
	}
}

// ApplyCredentialFlags copies the credential flags that were given on the
// command line from f (which may hold them as its own flags or inherited
// from a parent's persistent flags) into cfg.NATS, and validates the
// result: the error names the field.
func ApplyCredentialFlags(f *pflag.FlagSet, cfg *Config) error {
	for _, fl := range credentialFlags {
		flag := f.Lookup(fl.name)
		if flag == nil || !flag.Changed {
			continue
		}
		*fl.field(&cfg.NATS) = flag.Value.String()
	}
	return cfg.NATS.Validate()
}

// CredentialFlagsGiven reports whether any credential flag was given on the
// command line.
func CredentialFlagsGiven(f *pflag.FlagSet) bool {
	for _, fl := range credentialFlags {
		if flag := f.Lookup(fl.name); flag != nil && flag.Changed {
			return true
		}
	}
	return false
}

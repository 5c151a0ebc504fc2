package client

import (
	"log/slog"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
)

// Credentials say how a connection proves who it is to NATS and how it
// checks the server, as the cortex commands take them (--nats-user, ...;
// docs/security.md): a user and password, a token, an NKey seed file or a
// creds file (a JWT), at most one of them; and TLS with a CA, plus a client
// certificate and key for mutual TLS. The zero value uses none.
//
// Printing Credentials (String, %v, %#v, slog) names what is set and never
// shows a secret.
type Credentials struct {
	// User and Password: username/password authentication.
	User, Password string
	// Token: token authentication.
	Token string
	// NKeySeed is the path of a file holding an NKey user seed (SU...).
	NKeySeed string
	// Creds is the path of a creds file: a user JWT and its NKey seed.
	Creds string
	// CA is a PEM file of the certificate authorities the server's
	// certificate must chain to. Setting it (or Cert) turns TLS on.
	CA string
	// Cert and Key are the client certificate and its key (PEM files) for
	// mutual TLS.
	Cert, Key string
	// TLSServerName is the name the server's certificate must carry, when it
	// is not the host in the URL.
	TLSServerName string
	// InboxPrefix starts the subjects the connection receives answers on.
	// Default: _INBOX.<identity> with Options.Identity, else
	// _INBOX.<user> with User (a server can then let each user read its
	// own answers only), else nats.go's _INBOX.
	InboxPrefix string
}

func (c Credentials) bus() bus.Credentials {
	return bus.Credentials{
		User: c.User, Password: c.Password, Token: c.Token, NKeySeed: c.NKeySeed, Creds: c.Creds,
		CA: c.CA, Cert: c.Cert, Key: c.Key, TLSServerName: c.TLSServerName, InboxPrefix: c.InboxPrefix,
	}
}

// NATSOptions turns the credentials into nats.go options, reading and
// checking their files now: a missing or malformed file, or two ways of
// authenticating at once, is an error naming the field.
func (c Credentials) NATSOptions() ([]nats.Option, error) { return c.bus().Options() }

// Validate reports the first problem NATSOptions would.
func (c Credentials) Validate() error { return c.bus().Validate() }

// String says what is set, with no secret: "user alice, TLS (ca, cert)";
// "none" for the zero value.
func (c Credentials) String() string { return c.bus().Describe() }

// GoString is String, for %#v.
func (c Credentials) GoString() string { return "client.Credentials{" + c.String() + "}" }

// LogValue logs the credentials as String does.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// CredentialsFromEnv reads credentials from the environment variables the
// cortex commands and the Python SDK's Credentials.from_env read:
// NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED, NATS_CREDS, NATS_CA,
// NATS_CERT, NATS_KEY, NATS_TLS_SERVER_NAME and NATS_INBOX_PREFIX. Unset
// variables leave their fields empty; nothing is checked until connecting
// (or Validate).
func CredentialsFromEnv() Credentials {
	var b bus.Credentials
	for name, field := range config.CredentialEnv(&b) {
		if v, ok := os.LookupEnv(name); ok {
			*field = v
		}
	}
	return Credentials{
		User: b.User, Password: b.Password, Token: b.Token, NKeySeed: b.NKeySeed, Creds: b.Creds,
		CA: b.CA, Cert: b.Cert, Key: b.Key, TLSServerName: b.TLSServerName, InboxPrefix: b.InboxPrefix,
	}
}

package bus

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Credentials say how a connection proves who it is, and how it checks the
// server: user and password, a token, an NKey seed file, a creds file
// (JWT), TLS with a CA and, for mutual TLS, a client certificate and key.
// At most one of user/password, token, NKey and creds may be set; TLS goes
// with any of them. The zero value connects as before: no credentials.
//
// Credentials never appear in logs: LogValue and String name what is set
// and hide every secret.
type Credentials struct {
	// User and Password: username/password authentication.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token: token authentication.
	Token string `yaml:"token"`
	// NKeySeed is the path of a file holding an NKey user seed (SU...).
	NKeySeed string `yaml:"nkey_seed"`
	// Creds is the path of a creds file: a user JWT and its NKey seed.
	Creds string `yaml:"creds"`
	// CA is a PEM file of the certificate authorities the server's
	// certificate must chain to. Setting it (or Cert) turns TLS on.
	CA string `yaml:"ca"`
	// Cert and Key are the client certificate and its key (PEM) for mutual TLS.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// TLSServerName is the name the server's certificate must carry, when
	// it is not the host in the URL.
	TLSServerName string `yaml:"tls_server_name"`
	// InboxPrefix starts the subjects this connection receives answers on.
	// Default: "_INBOX.<user>" when User is set, so that a server can let
	// each user subscribe to its own answers only; nats.go's "_INBOX"
	// otherwise.
	InboxPrefix string `yaml:"inbox_prefix"`
}

// Field names, as the config file, the flags and the environment spell them:
// every error about a field names it all three ways.
var credentialFields = map[string][3]string{
	"user":            {"nats.user", "--nats-user", "NATS_USER"},
	"password":        {"nats.password", "--nats-password", "NATS_PASSWORD"},
	"token":           {"nats.token", "--nats-token", "NATS_TOKEN"},
	"nkey_seed":       {"nats.nkey_seed", "--nats-nkey", "NATS_NKEY_SEED"},
	"creds":           {"nats.creds", "--nats-creds", "NATS_CREDS"},
	"ca":              {"nats.ca", "--nats-ca", "NATS_CA"},
	"cert":            {"nats.cert", "--nats-cert", "NATS_CERT"},
	"key":             {"nats.key", "--nats-key", "NATS_KEY"},
	"tls_server_name": {"nats.tls_server_name", "--nats-tls-server-name", "NATS_TLS_SERVER_NAME"},
	"inbox_prefix":    {"nats.inbox_prefix", "--nats-inbox-prefix", "NATS_INBOX_PREFIX"},
}

// FieldName names a credential field the three ways it can be set:
// "nats.key (--nats-key, NATS_KEY)".
func FieldName(field string) string {
	n, ok := credentialFields[field]
	if !ok {
		return field
	}
	return fmt.Sprintf("%s (%s, %s)", n[0], n[1], n[2])
}

// IsZero reports whether no credential is set.
func (c Credentials) IsZero() bool { return c == Credentials{} }

// Authenticates reports whether the credentials identify a user: user and
// password, token, NKey or creds.
func (c Credentials) Authenticates() bool {
	return c.User != "" || c.Password != "" || c.Token != "" || c.NKeySeed != "" || c.Creds != ""
}

// TLS reports whether the connection uses TLS by these credentials.
func (c Credentials) TLS() bool { return c.CA != "" || c.Cert != "" || c.Key != "" }

// Inbox is the inbox prefix the connection uses: InboxPrefix, else
// DefaultInboxPrefix(User), else "" (nats.go's default, _INBOX).
func (c Credentials) Inbox() string {
	if c.InboxPrefix != "" {
		return c.InboxPrefix
	}
	if c.User != "" {
		return DefaultInboxPrefix(c.User)
	}
	return ""
}

// DefaultInboxPrefix is the inbox prefix of user: "_INBOX.<user>", with
// dots, spaces and wildcards in the name replaced by "_" so that the prefix
// adds exactly one token. A server configuration lets the user subscribe to
// "_INBOX.<user>.>" only (docs/security.md).
func DefaultInboxPrefix(user string) string {
	return "_INBOX." + strings.NewReplacer(".", "_", " ", "_", "*", "_", ">", "_", "\t", "_").Replace(user)
}

// Validate reports the first problem with the credentials: a combination
// that does not go together, or a file that cannot be read or parsed. The
// error names the field.
func (c Credentials) Validate() error {
	_, err := c.Options()
	return err
}

// Options turns the credentials into nats.go options, checking them: files
// are read now, so that a missing or malformed one is an error naming its
// field rather than a failure to connect.
func (c Credentials) Options() ([]nats.Option, error) {
	var opts []nats.Option
	methods := 0
	for _, set := range []bool{c.User != "" || c.Password != "", c.Token != "", c.NKeySeed != "", c.Creds != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return nil, fmt.Errorf("nats credentials: set only one of %s with %s, %s, %s or %s",
			FieldName("user"), FieldName("password"), FieldName("token"), FieldName("nkey_seed"), FieldName("creds"))
	}
	switch {
	case c.User != "" || c.Password != "":
		if c.User == "" {
			return nil, fmt.Errorf("nats credentials: %s is set but %s is empty", FieldName("password"), FieldName("user"))
		}
		if c.Password == "" {
			return nil, fmt.Errorf("nats credentials: %s is set but %s is empty", FieldName("user"), FieldName("password"))
		}
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.NKeySeed != "":
		if err := readable("nkey_seed", c.NKeySeed); err != nil {
			return nil, err
		}
		opt, err := nats.NkeyOptionFromSeed(c.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("nats credentials: %s %s: %w", FieldName("nkey_seed"), c.NKeySeed, err)
		}
		opts = append(opts, opt)
	case c.Creds != "":
		data, err := readFile("creds", c.Creds)
		if err != nil {
			return nil, err
		}
		if !bytes.Contains(data, []byte("BEGIN NATS USER JWT")) || !bytes.Contains(data, []byte("BEGIN USER NKEY SEED")) {
			return nil, fmt.Errorf("nats credentials: %s %s: not a creds file (want a user JWT and its NKey seed, as nsc writes them)", FieldName("creds"), c.Creds)
		}
		opts = append(opts, nats.UserCredentials(c.Creds))
	}

	if c.Cert != "" && c.Key == "" {
		return nil, fmt.Errorf("nats credentials: %s is set but %s is not: mutual TLS needs both", FieldName("cert"), FieldName("key"))
	}
	if c.Key != "" && c.Cert == "" {
		return nil, fmt.Errorf("nats credentials: %s is set but %s is not: mutual TLS needs both", FieldName("key"), FieldName("cert"))
	}
	if c.TLS() || c.TLSServerName != "" {
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}

	if prefix := c.Inbox(); prefix != "" {
		if strings.ContainsAny(prefix, "*> \t\r\n") || strings.HasSuffix(prefix, ".") || strings.HasPrefix(prefix, ".") || strings.Contains(prefix, "..") {
			return nil, fmt.Errorf("nats credentials: %s %q: must be subject tokens without wildcards or spaces", FieldName("inbox_prefix"), prefix)
		}
		opts = append(opts, nats.CustomInboxPrefix(prefix))
	}
	return opts, nil
}

// tlsConfig builds the client's TLS configuration from the files.
func (c Credentials) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if c.CA != "" {
		pem, err := readFile("ca", c.CA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats credentials: %s %s: no PEM certificate in it", FieldName("ca"), c.CA)
		}
		tc.RootCAs = pool
	}
	if c.Cert != "" {
		if err := readable("cert", c.Cert); err != nil {
			return nil, err
		}
		if err := readable("key", c.Key); err != nil {
			return nil, err
		}
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("nats credentials: %s %s and %s %s: %w", FieldName("cert"), c.Cert, FieldName("key"), c.Key, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

func readFile(field, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %s: %w", FieldName(field), unwrapPath(err))
	}
	return data, nil
}

func readable(field, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("nats credentials: %s: %w", FieldName(field), unwrapPath(err))
	}
	return f.Close()
}

// unwrapPath keeps the *PathError's path and cause: "open x: no such file".
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// Describe says what is set, with no secret: "user alice (password), TLS
// (ca, cert)". It is "none" for the zero value.
func (c Credentials) Describe() string {
	var parts []string
	switch {
	case c.User != "":
		parts = append(parts, "user "+c.User)
	case c.Token != "":
		parts = append(parts, "token")
	case c.NKeySeed != "":
		parts = append(parts, "nkey "+c.NKeySeed)
	case c.Creds != "":
		parts = append(parts, "creds "+c.Creds)
	}
	if c.TLS() {
		var files []string
		for _, f := range []struct{ name, v string }{{"ca", c.CA}, {"cert", c.Cert}} {
			if f.v != "" {
				files = append(files, f.name)
			}
		}
		parts = append(parts, "TLS ("+strings.Join(files, ", ")+")")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// String is Describe: printing credentials never shows a secret.
func (c Credentials) String() string { return c.Describe() }

// GoString is Describe too, for %#v.
func (c Credentials) GoString() string { return "bus.Credentials{" + c.Describe() + "}" }

// LogValue logs the credentials as Describe does.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.Describe()) }

package client_test

import (
	"testing"

	"github.com/cortex-os/core/pkg/client"
)

// CredentialsFromEnv reads every NATS_* variable the cortex commands and the
// Python SDK's Credentials.from_env read, each into its field.
func TestCredentialsFromEnv(t *testing.T) { // not parallel: t.Setenv
	want := client.Credentials{
		User: "u", Password: "p", Token: "t", NKeySeed: "seed.nk", Creds: "user.creds",
		CA: "ca.pem", Cert: "cert.pem", Key: "key.pem", TLSServerName: "nats.example", InboxPrefix: "_INBOX.u",
	}
	for name, v := range map[string]string{
		"NATS_USER": want.User, "NATS_PASSWORD": want.Password, "NATS_TOKEN": want.Token,
		"NATS_NKEY_SEED": want.NKeySeed, "NATS_CREDS": want.Creds, "NATS_CA": want.CA,
		"NATS_CERT": want.Cert, "NATS_KEY": want.Key, "NATS_TLS_SERVER_NAME": want.TLSServerName,
		"NATS_INBOX_PREFIX": want.InboxPrefix,
	} {
		t.Setenv(name, v)
	}
	if got := client.CredentialsFromEnv(); got != want {
		t.Fatalf("CredentialsFromEnv() = %#v, want every field set", got)
	}
	for _, name := range []string{"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED", "NATS_CREDS",
		"NATS_CA", "NATS_CERT", "NATS_KEY", "NATS_TLS_SERVER_NAME", "NATS_INBOX_PREFIX"} {
		t.Setenv(name, "")
	}
	if got := client.CredentialsFromEnv(); got != (client.Credentials{}) {
		t.Fatalf("with the variables empty: %#v", got)
	}
}

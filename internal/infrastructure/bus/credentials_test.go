package bus_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/cortex-os/core/internal/infrastructure/bus"
)

func tempFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCredentialsOptions(t *testing.T) {
	t.Parallel()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	seedFile := tempFile(t, "user.nk", string(seed))
	garbage := tempFile(t, "garbage", "not a key\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")

	for name, tc := range map[string]struct {
		c       bus.Credentials
		wantErr []string // substrings of the error; none: valid
	}{
		"none":              {c: bus.Credentials{}},
		"user and password": {c: bus.Credentials{User: "alice", Password: "s3cret"}},
		"token":             {c: bus.Credentials{Token: "t0ken"}},
		"nkey":              {c: bus.Credentials{NKeySeed: seedFile}},
		"user alone":        {c: bus.Credentials{User: "alice"}, wantErr: []string{"nats.password", "--nats-password", "NATS_PASSWORD"}},
		"password alone":    {c: bus.Credentials{Password: "pw-x"}, wantErr: []string{"nats.user"}},
		"token and user":    {c: bus.Credentials{User: "a", Password: "pw-b", Token: "tok-t"}, wantErr: []string{"only one of"}},
		"nkey and creds":    {c: bus.Credentials{NKeySeed: seedFile, Creds: seedFile}, wantErr: []string{"only one of"}},
		"cert without key":  {c: bus.Credentials{Cert: garbage}, wantErr: []string{"nats.key", "--nats-key", "NATS_KEY"}},
		"key without cert":  {c: bus.Credentials{Key: garbage}, wantErr: []string{"nats.cert"}},
		"missing ca":        {c: bus.Credentials{CA: missing}, wantErr: []string{"nats.ca", missing, "no such file"}},
		"garbage ca":        {c: bus.Credentials{CA: garbage}, wantErr: []string{"nats.ca", "no PEM certificate"}},
		"garbage cert":      {c: bus.Credentials{Cert: garbage, Key: garbage}, wantErr: []string{"nats.cert", "nats.key"}},
		"missing key":       {c: bus.Credentials{Cert: garbage, Key: missing}, wantErr: []string{"nats.key", missing}},
		"missing nkey":      {c: bus.Credentials{NKeySeed: missing}, wantErr: []string{"nats.nkey_seed", "--nats-nkey", "NATS_NKEY_SEED"}},
		"garbage nkey":      {c: bus.Credentials{NKeySeed: garbage}, wantErr: []string{"nats.nkey_seed", garbage}},
		"garbage creds":     {c: bus.Credentials{Creds: garbage}, wantErr: []string{"nats.creds", "not a creds file"}},
		"wildcard inbox":    {c: bus.Credentials{InboxPrefix: "_INBOX.*"}, wantErr: []string{"nats.inbox_prefix"}},
		"trailing dot":      {c: bus.Credentials{InboxPrefix: "_INBOX.a."}, wantErr: []string{"nats.inbox_prefix"}},
	} {
		_, err := tc.c.Options()
		if len(tc.wantErr) == 0 {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		for _, want := range tc.wantErr {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", name, err, want)
			}
		}
		if tc.c.Password != "" && strings.Contains(err.Error(), tc.c.Password) || tc.c.Token != "" && strings.Contains(err.Error(), tc.c.Token) {
			t.Errorf("%s: error %q shows a secret", name, err)
		}
	}
}

func TestInboxPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		c    bus.Credentials
		want string
	}{
		{bus.Credentials{}, ""},
		{bus.Credentials{User: "alice", Password: "x"}, "_INBOX.alice"},
		{bus.Credentials{User: "a.b*c", Password: "x"}, "_INBOX.a_b_c"},
		{bus.Credentials{User: "alice", Password: "x", InboxPrefix: "_I.alice"}, "_I.alice"},
		{bus.Credentials{Token: "t"}, ""},
	} {
		if got := tc.c.Inbox(); got != tc.want {
			t.Errorf("%v: Inbox() = %q, want %q", tc.c, got, tc.want)
		}
	}
}

// Whichever way credentials are printed or logged, no secret shows.
func TestCredentialsHideSecrets(t *testing.T) {
	t.Parallel()
	for _, c := range []bus.Credentials{
		{User: "alice", Password: "pa55-w0rd", CA: "/ca.pem", Cert: "/c.pem", Key: "/k.pem"},
		{Token: "pa55-w0rd"},
	} {
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("connecting", "credentials", c)
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("connecting", "credentials", c)
		for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), c.Describe(), logged.String()} {
			if strings.Contains(s, "pa55-w0rd") {
				t.Errorf("secret shown: %s", s)
			}
		}
	}
	if got := (bus.Credentials{User: "alice", Password: "p", CA: "/ca.pem"}).Describe(); got != "user alice, TLS (ca)" {
		t.Errorf("Describe = %q", got)
	}
}

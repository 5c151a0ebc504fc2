package config_test

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
)

func TestNATSSectionAndEnvironment(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, `
nats:
  user: file-user
  password: file-password
  inbox_prefix: _INBOX.custom
scheduler:
  require_worker_identity: true
worker:
  named_subjects: true
`)
	t.Setenv(config.EnvNatsPassword, "env-password")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := bus.Credentials{User: "file-user", Password: "env-password", InboxPrefix: "_INBOX.custom"}
	if cfg.NATS != want || !cfg.Scheduler.RequireWorkerIdentity || !cfg.Worker.NamedSubjects {
		t.Fatalf("Load = %+v / %+v / %+v", cfg.NATS, cfg.Scheduler, cfg.Worker)
	}
	if cfg.NATS.Password != "env-password" {
		t.Fatalf("password %q, want the environment's", cfg.NATS.Password)
	}
}

func TestEveryCredentialVariable(t *testing.T) {
	clearEnv(t)
	t.Setenv("NATS_USER", "u")
	t.Setenv("NATS_PASSWORD", "p")
	t.Setenv("NATS_INBOX_PREFIX", "_INBOX.x")
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.User != "u" || cfg.NATS.Password != "p" || cfg.NATS.InboxPrefix != "_INBOX.x" {
		t.Fatalf("NATS = %+v", cfg.NATS)
	}
	names := map[string]bool{}
	var c bus.Credentials
	for name := range config.CredentialEnv(&c) {
		names[name] = true
	}
	for _, name := range []string{"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED", "NATS_CREDS", "NATS_CA", "NATS_CERT", "NATS_KEY"} {
		if !names[name] {
			t.Errorf("%s is not read", name)
		}
	}
}

// A credential problem in the file is an error that names the file and the field.
func TestNATSErrors(t *testing.T) {
	clearEnv(t)
	for content, want := range map[string][]string{
		"nats:\n  cert: /nonexistent/cert.pem\n":        {"nats.key"},
		"nats:\n  ca: /nonexistent/ca.pem\n":            {"nats.ca", "/nonexistent/ca.pem"},
		"nats:\n  token: t\n  user: u\n  password: p\n": {"only one of"},
		"nats:\n  passwd: x\n":                          {"passwd", "line 2"},
	} {
		path := writeFile(t, content)
		_, err := config.Load(path)
		if err == nil {
			t.Errorf("%q: no error", content)
			continue
		}
		for _, w := range append(want, path) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not say %q", content, err, w)
			}
		}
	}
}

func TestCredentialFlags(t *testing.T) {
	t.Parallel()
	f := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.RegisterCredentialFlags(f)
	for _, name := range []string{"nats-user", "nats-password", "nats-token", "nats-nkey", "nats-creds", "nats-ca", "nats-cert", "nats-key"} {
		if f.Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
	if err := f.Parse([]string{"--nats-user", "flag-user", "--nats-password", "flag-password"}); err != nil {
		t.Fatal(err)
	}
	if !config.CredentialFlagsGiven(f) {
		t.Error("CredentialFlagsGiven = false")
	}
	cfg := config.Default()
	cfg.NATS = bus.Credentials{User: "file-user", Password: "file-password", InboxPrefix: "_INBOX.kept"}
	if err := config.ApplyCredentialFlags(f, cfg); err != nil {
		t.Fatal(err)
	}
	if want := (bus.Credentials{User: "flag-user", Password: "flag-password", InboxPrefix: "_INBOX.kept"}); cfg.NATS != want {
		t.Fatalf("NATS = %+v, want %+v", cfg.NATS, want)
	}

	bad := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.RegisterCredentialFlags(bad)
	if err := bad.Parse([]string{"--nats-cert", "/c.pem"}); err != nil {
		t.Fatal(err)
	}
	if err := config.ApplyCredentialFlags(bad, config.Default()); err == nil || !strings.Contains(err.Error(), "--nats-key") {
		t.Fatalf("--nats-cert alone: %v, want an error naming --nats-key", err)
	}
	none := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.RegisterCredentialFlags(none)
	if config.CredentialFlagsGiven(none) {
		t.Error("CredentialFlagsGiven with none given")
	}
}

package config_test

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/systest"
)

// clearEnv unsets the variables Load reads, so that the machine's environment
// does not leak into a test. (t.Setenv: such tests cannot be parallel.)
func clearEnv(t *testing.T) {
	t.Helper()
	t.Setenv(config.EnvNatsURL, "")
	t.Setenv(config.EnvLogLevel, "")
	var c bus.Credentials
	for name := range config.CredentialEnv(&c) {
		t.Setenv(name, "")
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cortex.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	if cfg.NatsURL != config.DefaultNatsURL || cfg.LogLevel != "info" {
		t.Fatalf("Default() = %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// Each call is a fresh value.
	cfg.NatsURL = "nats://changed:1"
	if config.Default().NatsURL != config.DefaultNatsURL {
		t.Fatal("Default() shares its value between calls")
	}
}

func TestLoadWithoutFileUsesDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if *cfg != *config.Default() {
		t.Fatalf("Load(\"\") = %+v, want defaults", cfg)
	}
}

func TestLoadFile(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "# a comment\nnats_url: nats://a:4222,nats://b:4223\nlog_level: warn\n")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NatsURL != "nats://a:4222,nats://b:4223" || cfg.LogLevel != "warn" {
		t.Fatalf("Load = %+v", cfg)
	}
}

func TestLoadPartialFileKeepsOtherDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := config.Load(writeFile(t, "log_level: error\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NatsURL != config.DefaultNatsURL || cfg.LogLevel != "error" {
		t.Fatalf("Load = %+v", cfg)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "comments only": "# nothing\n\n"} {
		t.Run(name, func(t *testing.T) {
			clearEnv(t)
			cfg, err := config.Load(writeFile(t, content))
			if err != nil {
				t.Fatalf("Load(%s file) = %v", name, err)
			}
			if *cfg != *config.Default() {
				t.Fatalf("Load(%s file) = %+v, want defaults", name, cfg)
			}
		})
	}
}

func TestEnvironmentWinsOverFile(t *testing.T) {
	path := writeFile(t, "nats_url: nats://file:4222\nlog_level: warn\n")
	t.Setenv(config.EnvNatsURL, "nats://env:4222")
	t.Setenv(config.EnvLogLevel, "debug")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NatsURL != "nats://env:4222" || cfg.LogLevel != "debug" {
		t.Fatalf("Load = %+v, want the environment's values", cfg)
	}
}

func TestEnvironmentWithoutFile(t *testing.T) {
	clearEnv(t)
	t.Setenv(config.EnvLogLevel, "warn")
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != "warn" || cfg.NatsURL != config.DefaultNatsURL {
		t.Fatalf("Load = %+v", cfg)
	}
}

func TestInvalidEnvironmentIsAnError(t *testing.T) {
	clearEnv(t)
	t.Setenv(config.EnvLogLevel, "loud")
	if _, err := config.Load(""); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Fatalf("Load with CORTEX_LOG_LEVEL=loud = %v, want an error naming the value", err)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		want    []string // substrings of the error, besides the path
	}{
		{"unknown key", "nats_url: nats://x:4222\nnats_ulr: nats://typo:4222\n", []string{"line 2", "nats_ulr"}},
		{"malformed yaml", "nats_url: [unclosed\n", []string{"line"}},
		{"wrong type", "nats_url:\n  - nats://a:4222\n", []string{"line 2"}},
		{"bad scheme", "nats_url: http://x:4222\n", []string{"scheme"}},
		{"no host", "nats_url: nats://\n", []string{"no host"}},
		{"bad url in list", "nats_url: nats://a:4222, http://b:4222\n", []string{"scheme"}},
		{"blank url", "nats_url: \"  \"\n", []string{"nats_url is empty"}},
		{"bad log level", "log_level: chatty\n", []string{"log_level", "chatty"}},
		{"client identity with a dot", "clients:\n  identities:\n    a.b: {tenant: x}\n", []string{"line 3", "invalid identity"}},
		{"client without tenant", "clients:\n  identities:\n    a:\n      admin: false\n", []string{"line 4", "clients.identities.a", "no tenant"}},
		{"clients unknown key", "clients:\n  require_identity: true\n  identitys: {}\n", []string{"line 3", "identitys"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			path := writeFile(t, tc.content)
			cfg, err := config.Load(path)
			if err == nil {
				t.Fatalf("Load = %+v, want an error", cfg)
			}
			for _, s := range append([]string{path}, tc.want...) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	clearEnv(t)
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	for name, load := range map[string]func(string) (*config.Config, error){
		"Load": config.Load, "LoadDefault": config.LoadDefault,
	} {
		_, err := load(missing)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
			t.Errorf("%s(missing) = %v, want a not-exist error naming the file", name, err)
		}
	}
}

func TestLoadDefaultReadsDefaultPathWhenPresent(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	t.Chdir(dir)
	// No config/local.yaml here: defaults.
	cfg, err := config.LoadDefault("")
	if err != nil || *cfg != *config.Default() {
		t.Fatalf("LoadDefault without %s = %+v, %v; want defaults", config.DefaultPath, cfg, err)
	}
	if err := os.MkdirAll(filepath.Dir(config.DefaultPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config.DefaultPath, []byte("log_level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = config.LoadDefault("")
	if err != nil || cfg.LogLevel != "warn" {
		t.Fatalf("LoadDefault with %s = %+v, %v; want its log_level", config.DefaultPath, cfg, err)
	}
}

// The repository's own development config parses.
func TestRepositoryLocalConfig(t *testing.T) {
	clearEnv(t)
	cfg, err := config.Load(filepath.Join(systest.RepoRoot(t), config.DefaultPath))
	if err != nil {
		t.Fatalf("%s: %v", config.DefaultPath, err)
	}
	if cfg.NatsURL == "" || cfg.LogLevel == "" {
		t.Fatalf("%s loaded as %+v", config.DefaultPath, cfg)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, level string
		ok         bool
	}{
		{"nats://localhost:4222", "info", true},
		{"tls://h:4222", "debug", true},
		{"ws://h:8080", "warn", true},
		{"wss://h:443", "error", true},
		{"nats://a:1, nats://b:2", "INFO", true},
		{"", "info", false},
		{"localhost:4222", "info", false},
		{"http://h:4222", "info", false},
		{"nats://", "info", false},
		{"nats://h:4222,", "info", false},
		{"nats://h:4222", "", false},
		{"nats://h:4222", "verbose", false},
	} {
		err := (&config.Config{NatsURL: tc.url, LogLevel: tc.level}).Validate()
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q, %q) = %v, want ok=%v", tc.url, tc.level, err, tc.ok)
		}
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError, "DEBUG": slog.LevelDebug,
	} {
		if got, err := config.ParseLevel(s); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "trace", "warning!"} {
		if _, err := config.ParseLevel(s); err == nil {
			t.Errorf("ParseLevel(%q) succeeded", s)
		}
	}
}

// The clients section binds identities to tenants.
func TestLoadClients(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, "clients:\n  require_identity: true\n  identities:\n    tenant-a: {tenant: a}\n    admin: {admin: true}\n")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Clients; !c.RequireIdentity || c.Identities["tenant-a"].Tenant != "a" || !c.Identities["admin"].Admin || len(c.Identities) != 2 {
		t.Errorf("clients = %+v", c)
	}
}

// scheduler.results.trust_document_workers: absent (the scheduler decides by
// require_worker_identity), true or false.
func TestLoadResultsTrust(t *testing.T) {
	clearEnv(t)
	for content, want := range map[string]string{
		"scheduler: {}\n": "absent",
		"scheduler:\n  results:\n    trust_document_workers: true\n":  "true",
		"scheduler:\n  results:\n    trust_document_workers: false\n": "false",
	} {
		cfg, err := config.Load(writeFile(t, content))
		if err != nil {
			t.Fatal(err)
		}
		got := "absent"
		if p := cfg.Scheduler.Results.TrustDocumentWorkers; p != nil {
			got = map[bool]string{true: "true", false: "false"}[*p]
		}
		if got != want {
			t.Errorf("%q: trust_document_workers %s, want %s", content, got, want)
		}
	}
}

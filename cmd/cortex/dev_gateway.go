package main

// The HTTP gateway cortex dev runs in its process (--api-addr).

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/pkg/client"
)

// checkDevAPIAddr refuses, before anything starts, a dev gateway that
// would serve without keys beyond loopback.
func checkDevAPIAddr(addr string, auth bool) error {
	if addr == "" || auth || gateway.IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("--api-addr %s is not a loopback address: without --auth the gateway has no API keys and every caller would be an administrator (use --auth, or 127.0.0.1)", addr)
}

// devAPIKey is one API key dev --auth makes.
type devAPIKey struct {
	id, tenant, role, key, file string
}

// devAPIKeys makes an administrator's key (for the administrator client's
// credentials file) and a submitter's for each tenant client.
func devAPIKeys(roles *embeddednats.DevAuth) ([]devAPIKey, *gateway.Keys, error) {
	users := append([]embeddednats.DevUser{roles.Client}, roles.Tenants...)
	var (
		out  []devAPIKey
		list []gateway.KeyConfig
	)
	for _, u := range users {
		k, err := gateway.NewKey()
		if err != nil {
			return nil, nil, err
		}
		dk := devAPIKey{id: u.User, tenant: u.Tenant, role: "submitter", key: k, file: devCredentialsFileOf(u)}
		if u.Tenant == "" {
			dk.id, dk.role = "admin", "admin"
		}
		out = append(out, dk)
		list = append(list, gateway.KeyConfig{ID: dk.id, SHA256: gateway.HashKey(k), Tenant: dk.tenant, Role: dk.role})
	}
	keys, err := gateway.NewKeys(list)
	return out, keys, err
}

// startDevGateway serves the API on addr until ctx ends. With roles (dev
// --auth) it connects as the administrator client, asks for API keys it
// makes, prints them and adds them (CORTEX_API_URL, CORTEX_API_KEY) to the
// clients' credentials files in dataDir. The returned function waits until
// it has stopped. With reg, the gateway counts its requests there and
// serves reg at /metrics (the scheduler's and the workers' series too).
func startDevGateway(ctx context.Context, out io.Writer, addr, url, dataDir string, log *slog.Logger, roles *embeddednats.DevAuth, reg *prometheus.Registry) (wait func(), err error) {
	opts := client.Options{Name: "cortex-gateway", SenderID: "cortex-gateway", Logger: log}
	var (
		keys    *gateway.Keys
		devKeys []devAPIKey
	)
	if roles != nil {
		opts.Credentials = client.Credentials{User: roles.Client.User, Password: roles.Client.Password}
		opts.Identity = roles.Client.User
		if devKeys, keys, err = devAPIKeys(roles); err != nil {
			return nil, err
		}
	}
	cl, err := client.Connect(url, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	gcfg := gateway.Config{Client: cl, Keys: keys, Logger: log}
	lcfg := gateway.ListenConfig{Addr: addr, ShutdownGrace: 2 * time.Second}
	if reg != nil {
		gcfg.Metrics, lcfg.Metrics = reg, reg
	}
	srv, err := gateway.New(gcfg)
	if err != nil {
		cl.Close()
		return nil, err
	}
	ln, err := srv.Listen(lcfg)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("%w (--api-addr 127.0.0.1:0 picks a free port; --api-addr '' runs no gateway)", err)
	}
	base := ln.URL()
	fmt.Fprintf(out, "  HTTP API:    %s/v1 (docs/api.md)\n", base)
	fmt.Fprintf(out, "  dashboard:   %s/\n", base)
	if reg != nil {
		fmt.Fprintf(out, "  metrics:     %s/metrics\n", base)
	}
	for _, k := range devKeys {
		what := "administrator: every tenant"
		if k.tenant != "" {
			what = "submitter, tenant " + k.tenant + " only"
		}
		path := filepath.Join(dataDir, k.file)
		fmt.Fprintf(out, "    %-10s API key %s  (%s; %s)\n", k.id, k.key, what, path)
		if err := appendEnv(path, "CORTEX_API_URL="+base, "CORTEX_API_KEY="+k.key); err != nil {
			_ = ln.Run(canceled()) // closes the listener
			cl.Close()
			return nil, err
		}
	}
	if len(devKeys) > 0 {
		fmt.Fprintf(out, "  over HTTP:   . %s && curl -H \"Authorization: Bearer $CORTEX_API_KEY\" $CORTEX_API_URL/v1/jobs\n",
			filepath.Join(dataDir, devCredentialsFile))
	} else {
		fmt.Fprintf(out, "  over HTTP:   curl -X POST %s/v1/jobs -d '{\"topic\":\"job.echo\"}'\n", base)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cl.Close()
		if err := ln.Run(ctx); err != nil {
			log.Error("stopped", "component", "gateway", "err", err)
		}
	}()
	return func() { <-done }, nil
}

// appendEnv adds a line "export K=V ..." to a credentials file.
func appendEnv(path string, kv ...string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing the dev credentials: %w", err)
	}
	line := "export"
	for _, s := range kv {
		line += " " + s
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return fmt.Errorf("writing the dev credentials: %w", err)
	}
	return f.Close()
}

// canceled is a context already ended.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

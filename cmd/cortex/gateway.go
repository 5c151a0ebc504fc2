package main

// cortex gateway: the HTTP/JSON API (internal/gateway, docs/api.md) as its
// own process, stateless, asking the schedulers over NATS.

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/tracing"
)

// defaultAPIAddr is where cortex gateway and cortex dev serve the API.
const defaultAPIAddr = "127.0.0.1:8080"

// gatewayFlags are cortex gateway's own flags.
type gatewayFlags struct {
	addr, keysFile, tlsCert, tlsKey, corsOrigin, policyFile, logLevel string
	metricsAddr                                                       string
	insecureNoAuth                                                    bool
	rateLimit                                                         float64
}

func newGatewayCommand() *cobra.Command {
	var (
		conn connFlags
		g    gatewayFlags
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve the HTTP/JSON API and the dashboard, asking the schedulers over NATS",
		Long: `gateway serves the HTTP API (docs/api.md) and the dashboard on --api-addr.
It keeps no state: every answer is a scheduler's, over NATS, so run as many
as you like behind a load balancer.

Callers authenticate with API keys (Authorization: Bearer <key>), listed in
--api-keys FILE as SHA-256 hashes, each bound to a tenant and a role
(viewer, submitter, admin). Without --api-keys every caller is an
administrator, so the gateway then listens on a loopback address only and
refuses any other unless --insecure-no-auth.

Its NATS user acts for every tenant (the administrator's permissions,
docs/security.md); the keys hold each caller to its tenant. NATS is found as
by every command (--config, NATS_URL, --nats-url, the --nats-* credentials).

--metrics-addr serves the gateway's own Prometheus metrics (requests by
route and status, their latency, runtime, process) on an address of its
own; the API's /metrics is not served. A request's W3C traceparent puts
the job it submits in the caller's trace; spans are exported with OTLP
when OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/observability.md).

SIGINT or SIGTERM stops it: event streams end, the requests in hand finish.`,
		Example: `  cortex gateway --api-addr 127.0.0.1:8080
  cortex gateway --api-addr :8443 --api-keys keys.yaml --tls-cert cert.pem --tls-key key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := levelOf(g.logLevel)
			if err != nil {
				return err
			}
			log := logging.New(os.Stderr, level)
			var keys *gateway.Keys
			if g.keysFile != "" {
				if keys, err = gateway.LoadKeys(g.keysFile); err != nil {
					return oneLine(err)
				}
			}
			// Refuse an exposed address before connecting to anything.
			if err := gateway.CheckExposure(g.addr, keys, g.insecureNoAuth); err != nil {
				return err
			}
			var policy *safety.Policy
			if g.policyFile != "" {
				if policy, err = safety.LoadPolicy(g.policyFile); err != nil {
					return oneLine(err)
				}
			}
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			// Its own series (requests by route, latency, runtime), on an
			// address of their own: the API's /metrics is not served.
			// Submit spans go out with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
			// is set; a caller's traceparent is followed either way.
			stopTracing, err := tracing.Setup(cmd.Context(), "cortex-gateway", log)
			if err != nil {
				return err
			}
			defer func() { _ = stopTracing(context.WithoutCancel(cmd.Context())) }()
			cfg := gateway.Config{Client: s.client, Keys: keys, Policy: policy, Logger: log, CORSOrigin: g.corsOrigin, RateLimit: g.rateLimit}
			var msrv *metrics.Server
			if g.metricsAddr != "" {
				reg := metrics.NewRegistry()
				if msrv, err = metrics.Listen(g.metricsAddr, reg, log); err != nil {
					return fmt.Errorf("metrics: %w", err)
				}
				defer func() { _ = msrv.Close() }()
				cfg.Metrics = reg
			}
			srv, err := gateway.New(cfg)
			if err != nil {
				return err
			}
			ln, err := srv.Listen(gateway.ListenConfig{Addr: g.addr, TLSCert: g.tlsCert, TLSKey: g.tlsKey, InsecureNoAuth: g.insecureNoAuth})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			auth := fmt.Sprintf("%d API keys from %s", keys.Len(), g.keysFile)
			if keys == nil {
				auth = "no API keys: every caller is an administrator"
			}
			fmt.Fprintf(out, "CortexOS gateway: API on %s/v1 (NATS %s; %s)\n", ln.URL(), s.url, auth)
			fmt.Fprintf(out, "  dashboard:   %s/\n", ln.URL())
			fmt.Fprintf(out, "  OpenAPI:     %s/openapi.json\n", ln.URL())
			if msrv != nil {
				fmt.Fprintf(out, "  metrics:     http://%s%s\n", msrv.Addr(), metrics.Path)
			}
			fmt.Fprintln(out, "  Ctrl-C stops it.")
			ctx, stop := signalContext(cmd)
			defer stop()
			return ln.Run(ctx)
		},
	}
	f := cmd.Flags()
	registerAPIAddr(f.StringVar, &g.addr)
	f.StringVar(&g.keysFile, "api-keys", "", "API key file (YAML: keys with id, sha256, tenant, role; docs/api.md); without it every caller is an administrator and only loopback is served")
	f.StringVar(&g.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (with --tls-key)")
	f.StringVar(&g.tlsKey, "tls-key", "", "the PEM key of --tls-cert")
	f.BoolVar(&g.insecureNoAuth, "insecure-no-auth", false, "without --api-keys, serve on an address that is not loopback anyway: anyone who reaches it is an administrator")
	f.StringVar(&g.corsOrigin, "cors-origin", "", `the browser origin allowed to call the API ("*" any; default none)`)
	f.Float64Var(&g.rateLimit, "rate-limit", 0, "requests per second each API key may make (burst twice that; 0 no limit)")
	f.StringVar(&g.policyFile, "policy", "", "the policy POST /v1/policy/eval and GET /v1/policy show (default: the shipped policy)")
	f.StringVar(&g.logLevel, "log-level", "info", "debug logs every request; info the failures")
	f.StringVar(&g.metricsAddr, "metrics-addr", "", metrics.FlagUsage+"; the gateway's requests by route and status, runtime, process")
	conn.register(f, "request-timeout")
	return cmd
}

// registerAPIAddr adds --api-addr with its default.
func registerAPIAddr(add func(*string, string, string, string), dst *string) {
	add(dst, "api-addr", defaultAPIAddr, "address the HTTP API and the dashboard listen on (port 0 picks a free one)")
}

func levelOf(name string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", name)
	}
	return l, nil
}

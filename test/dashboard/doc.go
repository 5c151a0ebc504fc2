// Package dashboard tests the gateway's web dashboard (internal/gateway/ui)
// in headless Chromium, driven by chromedp, against a real NATS server,
// scheduler, worker and gateway. Without chromium on PATH the test fails
// when CI is set and is skipped otherwise. docs/dashboard.md describes the
// dashboard; -update-screenshots rewrites its pictures in docs/img/.
package dashboard

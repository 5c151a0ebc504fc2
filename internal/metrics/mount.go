package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Mount serves g's metrics at GET Path and hands every other request to
// next: an HTTP server (the gateway) exposes /metrics beside its own routes
// without knowing of them, and without its authentication (scrapers carry
// no API key; serve it on an address only the scraper reaches, or put
// the gateway behind a proxy that keeps /metrics inside).
//
//	srv := &http.Server{Handler: metrics.Mount(gatewayHandler, reg)}
func Mount(next http.Handler, g prometheus.Gatherer) http.Handler {
	h := Handler(g)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == Path && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

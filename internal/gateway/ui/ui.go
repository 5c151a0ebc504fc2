// Package ui is the CortexOS dashboard: a page of plain HTML, CSS and
// JavaScript, embedded in the binary and served by the gateway at / (the
// page) and /ui/ (its files). It loads nothing from elsewhere (its
// Content-Security-Policy forbids it) and reads everything from the
// gateway's API with the key the user enters (docs/dashboard.md).
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// Static holds the dashboard's files: index.html and what it loads.
//
//go:embed static
var static embed.FS

// Files are the dashboard's files, index.html at the root.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded directory is there: a build error otherwise
	}
	return sub
}

// ContentSecurityPolicy is sent with every file: the page may load and
// connect to its own origin only.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves index.html at / and the files under /ui/.
func Handler() http.Handler {
	files := http.FileServerFS(Files())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		name, ok := strings.CutPrefix(r.URL.Path, "/ui/")
		if r.URL.Path == "/" {
			name, ok = "", true
		}
		if !ok || name == "index.html" {
			// FileServer would redirect /ui/index.html to /ui/; the page is at /.
			http.Redirect(w, r, "/", http.StatusMovedPermanently)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + name
		files.ServeHTTP(w, r2)
	})
}

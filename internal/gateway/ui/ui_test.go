package ui_test

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/gateway/ui"
)

// svgNamespace is a name, not a resource: SVG's xmlns and the argument of
// createElementNS. No browser fetches it.
const svgNamespace = "http://www.w3.org/2000/svg"

var (
	// absoluteURL is an http(s) URL anywhere in a file.
	absoluteURL = regexp.MustCompile(`(?i)https?://[^\s"'<>)]*`)
	// humanLink is an <a href="http..."> : a link a person may follow.
	humanLink = regexp.MustCompile(`(?i)<a\s[^>]*href\s*=\s*["']https?://[^"']*["']`)
	// protocolRelative is a src, href, action or url() starting with //:
	// another host, whatever the page's scheme.
	protocolRelative = regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?\s*//|url\(\s*["']?\s*//|@import\s+["']?//|fetch\(\s*["'` + "`" + `]//`)
)

// The embedded files reference nothing outside the gateway: no script,
// style, font, image or API call from another origin (no CDN). Only links
// meant for a person to follow (<a href>) may point elsewhere.
func TestNoExternalReferences(t *testing.T) {
	t.Parallel()
	files := 0
	err := fs.WalkDir(ui.Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := fs.ReadFile(ui.Files(), path)
		if err != nil {
			return err
		}
		text := string(data)
		if strings.HasSuffix(path, ".html") {
			text = humanLink.ReplaceAllString(text, "<a")
		}
		for _, u := range absoluteURL.FindAllString(text, -1) {
			if u != svgNamespace {
				t.Errorf("%s references %s", path, u)
			}
		}
		for _, m := range protocolRelative.FindAllString(text, -1) {
			t.Errorf("%s references another host: %s", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("%d embedded files: want index.html, app.js, app.css", files)
	}
}

// The check itself: it finds what it must and lets links for people be.
func TestNoExternalReferencesCatches(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		`<script src="https://cdn.example.com/x.js">`, `<link href="http://fonts.example.com/f.css">`,
		`fetch("https://api.example.com")`, `<img src="//cdn.example.com/a.png">`, `background: url(//x.example.com/i.png)`,
	} {
		if absoluteURL.FindString(humanLink.ReplaceAllString(bad, "<a")) == "" && protocolRelative.FindString(bad) == "" {
			t.Errorf("not caught: %s", bad)
		}
	}
	ok := `<a href="https://github.com/cortex-os/core" rel="noopener">source</a>`
	if u := absoluteURL.FindString(humanLink.ReplaceAllString(ok, "<a")); u != "" {
		t.Errorf("a link for people caught: %s", u)
	}
}

// Every file is served with a policy that lets the page load and connect
// to its own origin only.
func TestHandlerHeaders(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(ui.Handler())
	t.Cleanup(srv.Close)
	for path, status := range map[string]int{"/": 200, "/ui/app.js": 200, "/ui/app.css": 200, "/ui/missing": 404} {
		res, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != status || res.Header.Get("Content-Security-Policy") != ui.ContentSecurityPolicy {
			t.Errorf("%s: %d %v", path, res.StatusCode, res.Header)
		}
	}
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(srv.URL + "/ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/" {
		t.Errorf("/ui/index.html: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	if !strings.Contains(ui.ContentSecurityPolicy, "default-src 'none'") || strings.Contains(ui.ContentSecurityPolicy, "http") {
		t.Errorf("policy %q", ui.ContentSecurityPolicy)
	}
}

package gateway_test

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/gateway"
)

// The served OpenAPI document parses, and its paths and methods are exactly
// the router's: every documented operation reaches a handler, not the
// catch-all.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(rg.want(t, 200, "GET", "/openapi.json", "", "").body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var ops []string
	for path, methods := range doc.Paths {
		for m, op := range methods {
			ops = append(ops, strings.ToUpper(m)+" "+path)
			concrete := strings.NewReplacer("{id}", "x").Replace(path)
			if !strings.Contains(path, "{") && strings.Contains(string(op), "text/event-stream") {
				// A stream that does not end: routed if it opens.
				if res := rg.open(t, concrete, "key-admin"); res.StatusCode != 200 {
					t.Errorf("%s %s: %d", m, path, res.StatusCode)
				}
				continue
			}
			r := rg.do(t, strings.ToUpper(m), concrete, "key-admin", "")
			if strings.Contains(string(r.body), "no route") {
				t.Errorf("%s %s is documented but not routed", m, path)
			}
		}
	}
	sort.Strings(ops)
	want := gateway.RouteNames()
	sort.Strings(want)
	if strings.Join(ops, "\n") != strings.Join(want, "\n") {
		t.Errorf("documented:\n%s\nrouted:\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
}

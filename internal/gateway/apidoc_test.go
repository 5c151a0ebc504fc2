package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/gateway"
)

// docs/api.md lists every route the router has, as `METHOD /path`.
func TestAPIDocListsEveryRoute(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range gateway.RouteNames() {
		if !strings.Contains(string(b), "`"+name+"`") {
			t.Errorf("docs/api.md does not list %s", name)
		}
	}
}

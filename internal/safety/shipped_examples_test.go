package safety_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// uncommentRules returns a policy file with the rules commented out under
// "rules:" turned on: a line "  # - id: x" becomes "  - id: x" and
// "  #   match:" becomes "    match:". Prose comments stay comments.
func uncommentRules(src string) string {
	var out []string
	inRules := false
	for line := range strings.Lines(src) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "rules:") {
			inRules = true
		}
		if inRules {
			if rest, ok := strings.CutPrefix(line, "  # - "); ok {
				line = "  - " + rest
			} else if rest, ok := strings.CutPrefix(line, "  #   "); ok {
				line = "    " + rest
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

// TestShippedPolicyCommentedExamples: the rules config/policy.yaml shows
// commented out are valid as written once uncommented, and the example
// restricting job.code.python does what its comment says: only the ops
// and data tenants run code, at a bounded rate.
func TestShippedPolicyCommentedExamples(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile(filepath.Join("..", "..", "config", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := safety.ParsePolicy([]byte(uncommentRules(string(shipped))))
	if err != nil {
		t.Fatalf("the commented examples of config/policy.yaml, uncommented: %v", err)
	}
	ids := p.RuleIDs()
	for _, id := range []string{"forbidden-topic", "tenant-rate", "no-secrets-in-env", "critical-only-for-ops", "code-python-tenants", "code-python-rate"} {
		if !slices.Contains(ids, id) {
			t.Errorf("rule %s is not among the uncommented rules %v", id, ids)
		}
	}

	k, err := safety.New(safety.Config{Policy: p, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tenant, topic string
		decision      safety.Decision
		rule          string
	}{
		{"guest", "job.code.python", safety.Deny, "code-python-tenants"},
		{"", "job.code.python", safety.Deny, "code-python-tenants"},
		{"ops", "job.code.python", safety.Allow, ""},
		{"data", "job.code.python", safety.Allow, ""},
		{"guest", "job.echo", safety.Allow, ""},
	} {
		v, err := k.Check(context.Background(), &pb.JobRequest{Tenant: tc.tenant, Topic: tc.topic})
		if err != nil {
			t.Fatal(err)
		}
		if v.Decision != tc.decision || v.RuleID != tc.rule {
			t.Errorf("tenant %q topic %s: %s by %q, want %s by %q", tc.tenant, tc.topic, v.Decision, v.RuleID, tc.decision, tc.rule)
		}
	}
	// The rate rule: a burst of 20 code jobs for one tenant, then throttled.
	var last safety.Verdict
	for range 21 {
		if last, err = k.Check(context.Background(), &pb.JobRequest{Tenant: "data", Topic: "job.code.python"}); err != nil {
			t.Fatal(err)
		}
	}
	if last.Decision != safety.Throttle || last.RuleID != "code-python-rate" || last.RetryAfter <= 0 {
		t.Errorf("the 21st code job of tenant data: %s by %q retry after %s, want throttle by code-python-rate", last.Decision, last.RuleID, last.RetryAfter)
	}
}

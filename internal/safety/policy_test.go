package safety_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/safety"
)

func mustPolicy(t testing.TB, src string) *safety.Policy {
	t.Helper()
	p, err := safety.ParsePolicy([]byte(src))
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	return p
}

// TestShippedPolicy: config/policy.yaml is the embedded default, it
// validates, and it has the design document's rule.
func TestShippedPolicy(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile(filepath.Join("..", "..", "config", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shipped, safety.DefaultPolicyYAML()) {
		t.Fatal("internal/safety/default_policy.yaml differs from config/policy.yaml: copy config/policy.yaml over it")
	}
	p, err := safety.LoadPolicy(filepath.Join("..", "..", "config", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Version == "" || p.Default != safety.Allow || !strings.Contains(strings.Join(p.RuleIDs(), ","), "forbidden-topic") {
		t.Fatalf("shipped policy: version %q default %s rules %v", p.Version, p.Default, p.RuleIDs())
	}
	if d := safety.DefaultPolicy(); d.Version != p.Version || d.NumRules() != p.NumRules() {
		t.Fatalf("DefaultPolicy() = %s/%d rules, the file %s/%d", d.Version, d.NumRules(), p.Version, p.NumRules())
	}
}

// TestValidationReportsEveryError: each broken policy reports every problem,
// each at its line.
func TestValidationReportsEveryError(t *testing.T) {
	t.Parallel()
	type want struct {
		line  int
		field string
		msg   string
	}
	for _, tc := range []struct {
		name string
		src  string
		want []want
	}{
		{"empty file", "", []want{{0, "version", "version is required"}}},
		{"missing version", "default: allow\n", []want{{1, "version", "version is required"}}},
		{"not a mapping", "- a\n- b\n", []want{{1, "", "want a mapping"}}},
		{"yaml syntax", "version: v1\nrules: [\n", []want{{2, "", "did not find"}}},
		{"two documents", "version: v1\n---\nversion: v2\n", []want{{2, "", "one YAML document"}}},
		{"many at once", `version: v1
default: maybe
colour: blue
rules:
  - id: a
    match:
      topics: ["job..x", "a.>.b"]
      tenants: ["[a-"]
      priorities: [URGENT]
      payload_bytes_over: -3
      color: red
    decision: deny
    reason: x
  - id: a
    decision: allow
  - decision: explode
  - id: t
    decision: throttle
    reason: slow down
    throttle: {rate: 0, per: soon, by: planet, burst: 2}
  - id: c
    when: job.tenant +
    decision: allow
  - id: n
    when: job.tenant
    decision: allow
  - id: r
    decision: deny
  - id: th
    decision: allow
    throttle: {rate: 1, per: 1s}
  - id: tt
    decision: throttle
    reason: r
  - id: e
    match:
      topics: []
      labels: {}
    decision: allow
`, []want{
			{2, "default", "want allow or deny"},
			{3, "colour", "unknown key"},
			{7, "rules[0].match.topics[0]", "empty token"},
			{7, "rules[0].match.topics[1]", "> must be the last token"},
			{8, "rules[0].match.tenants[0]", "bad glob"},
			{9, "rules[0].match.priorities[0]", "want BATCH"},
			{10, "rules[0].match.payload_bytes_over", "at least 0"},
			{11, "rules[0].match.color", "unknown key"},
			{14, "rules[1].id", "duplicate rule id"},
			{16, "rules[2].id", "id is required"},
			{16, "rules[2].decision", "want allow, deny or throttle"},
			{20, "rules[3].throttle.rate", "at least 1"},
			{20, "rules[3].throttle.per", "want a duration"},
			{20, "rules[3].throttle.by", "want tenant, topic or tenant_topic"},
			{22, "rules[4].when", "Syntax error"},
			{25, "rules[5].when", "true/false"},
			{27, "rules[6].reason", "needs a reason"},
			{31, "rules[7].throttle", "belong to a rule with decision: throttle"},
			{32, "rules[8].throttle", "needs throttle"},
			{37, "rules[9].match.topics", "empty list"},
			{38, "rules[9].match.labels", "empty labels"},
		}},
		{"on_error", `version: v1
rules:
  - id: unknown
    when: job.tenant == "a"
    on_error: ignore
    decision: deny
    reason: r
  - id: allow-on-error
    when: job.tenant == "a"
    on_error: allow
    decision: deny
    reason: r
  - id: throttle-on-deny
    when: job.tenant == "a"
    on_error: throttle
    decision: deny
    reason: r
  - id: no-when
    match: {topics: [a]}
    on_error: deny
    decision: deny
    reason: r
  - id: not-a-value
    when: job.tenant == "a"
    on_error: [deny]
    decision: deny
    reason: r
`, []want{
			{5, "rules[0].on_error", "want deny, skip or throttle"},
			{10, "rules[1].on_error", "on_error: allow would admit"},
			{15, "rules[2].on_error", "belongs to a rule with decision: throttle"},
			{20, "rules[3].on_error", "has none"},
			{25, "rules[4].on_error", "want a single value"},
		}},
		{"duplicate keys", "version: v1\nversion: v2\nrules:\n  - id: a\n    id: b\n    decision: allow\n",
			[]want{{2, "version", "duplicate key"}, {5, "rules[0].id", "duplicate key"}}},
		{"rules not a list", "version: v1\nrules: {a: 1}\n", []want{{2, "rules", "want a list"}}},
		{"when on a later line of a block", "version: v1\nrules:\n  - id: a\n    when: |\n      job.tenant == \"x\" &&\n        job.nope\n    decision: allow\n",
			[]want{{6, "rules[0].when", "undefined field 'nope'"}}},
		{"cel unknown variable", "version: v1\nrules:\n  - id: a\n    when: request.tenant == \"x\"\n    decision: allow\n",
			[]want{{4, "rules[0].when", "undeclared reference"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := safety.ParsePolicy([]byte(tc.src))
			if err == nil {
				t.Fatalf("ParsePolicy accepted it: %+v", p)
			}
			if !errors.Is(err, safety.ErrInvalidPolicy) {
				t.Fatalf("error %v is not ErrInvalidPolicy", err)
			}
			var pe *safety.PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *PolicyError", err)
			}
			if len(pe.Errors) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%v", len(pe.Errors), len(tc.want), err)
			}
			for i, w := range tc.want {
				if i >= len(pe.Errors) {
					break
				}
				got := pe.Errors[i]
				if got.Line != w.line || got.Field != w.field || !strings.Contains(got.Msg, w.msg) {
					t.Errorf("error %d = %q (line %d field %q); want line %d field %q containing %q", i, got.String(), got.Line, got.Field, w.line, w.field, w.msg)
				}
				if w.line > 0 && got.Col <= 0 && tc.name != "yaml syntax" && tc.name != "two documents" {
					t.Errorf("error %d %q has no column", i, got.String())
				}
			}
		})
	}
}

func TestPolicyErrorText(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte("version: v1\ndefault: no\nrules: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := safety.LoadPolicy(path)
	want := "invalid policy " + path + ": 2 errors:\n  line 2:10: default: want allow or deny, got \"no\"\n  line 3:8: rules: want a list of rules"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}
	if _, err := safety.LoadPolicy(filepath.Join(dir, "missing.yaml")); !errors.Is(err, safety.ErrInvalidPolicy) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("a missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#"), safety.MaxPolicyBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := safety.LoadPolicy(big); !errors.Is(err, safety.ErrInvalidPolicy) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a file too large: %v", err)
	}
}

func TestPolicyAccepts(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, `
version: 7            # a number is a fine version
default: deny
default_reason: closed by default
rules:
  - id: anchors
    description: YAML anchors and one-value lists work
    match: &m
      topics: job.echo
      tenants: ["acme", "acme-*"]
      priorities: [batch, JOB_PRIORITY_CRITICAL]
      capabilities: [gpu]
      labels: {zone: eu}
      env_vars: ["*_SECRET"]
      payload_bytes_over: 1_024
      context_bytes_over: 0x10
    decision: allow
  - id: again
    match: *m
    when: job.tenant.startsWith("acme") && size(job.capabilities) > 0
    on_error: deny
    decision: allow
  - id: careful
    when: job.tenant == "x"
    on_error: skip
    decision: deny
    reason: r
  - id: slow
    when: job.tenant != "ops"
    on_error: throttle
    decision: throttle
    reason: slow down
    throttle: {rate: 10, per: 1m, burst: 20, by: tenant_topic, max_keys: 50}
  - id: empty-match
    match:
    decision: allow
`)
	if p.Version != "7" || p.Default != safety.Deny || p.DefaultReason != "closed by default" || p.NumRules() != 5 {
		t.Fatalf("policy %+v %v", p, p.RuleIDs())
	}
}

// FuzzParsePolicy: ParsePolicy never panics; it either accepts the input
// or refuses it with a *PolicyError whose errors all have a message.
func FuzzParsePolicy(f *testing.F) {
	f.Add(safety.DefaultPolicyYAML())
	f.Add([]byte(""))
	f.Add([]byte("version: v1\nrules:\n  - id: a\n    when: job.tenant == 'x'\n    decision: deny\n    reason: r\n"))
	f.Add([]byte("version: v1\nrules:\n  - id: t\n    decision: throttle\n    reason: r\n    throttle: {rate: 5, per: 1s}\n"))
	f.Add([]byte("version: v1\nrules: [\n"))
	f.Add([]byte("version: v1\nrules:\n  - id: a\n    when: job.priority == 'BATCH'\n    on_error: skip\n    decision: deny\n    reason: r\n"))
	f.Add([]byte("version: &a [*a]\n"))
	f.Add([]byte("version: v1\nrules:\n  - id: a\n    match: {topics: ['a.*.>', 'job.gpu-[0-9]'], env_vars: ['A?']}\n    decision: allow\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := safety.ParsePolicy(data)
		if err == nil {
			if p == nil || p.Version == "" {
				t.Fatalf("accepted a policy without a version: %+v", p)
			}
			return
		}
		var pe *safety.PolicyError
		if !errors.As(err, &pe) || len(pe.Errors) == 0 || !errors.Is(err, safety.ErrInvalidPolicy) {
			t.Fatalf("error %T %v", err, err)
		}
		for _, fe := range pe.Errors {
			if fe.Msg == "" {
				t.Fatalf("an error without a message: %+v", fe)
			}
		}
	})
}

package tenancy_test

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cortex-os/core/internal/tenancy"
)

func policy(t *testing.T, require bool) *tenancy.Policy {
	t.Helper()
	p, err := tenancy.New(tenancy.Config{RequireIdentity: require, Identities: map[string]tenancy.Binding{
		"tenant-a": {Tenant: "a"},
		"tenant-b": {Tenant: "b"},
		"admin":    {Admin: true},
		"ops":      {Admin: true, Tenant: "ops"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A tenant's client submits for its tenant only (an empty tenant is
// stamped with it) and sees its tenant's jobs only; an administrator sees
// and submits for every tenant.
func TestPrincipals(t *testing.T) {
	t.Parallel()
	p := policy(t, true)
	a, err := p.Resolve("tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Restricted() || a.Tenant != "a" || a.Admin {
		t.Errorf("tenant-a = %+v", a)
	}
	if got, err := a.SubmitTenant(""); got != "a" || err != nil {
		t.Errorf("tenant-a submitting for no tenant: %q, %v; want stamped a", got, err)
	}
	if got, err := a.SubmitTenant("a"); got != "a" || err != nil {
		t.Errorf("tenant-a submitting for a: %q, %v", got, err)
	}
	_, err = a.SubmitTenant("b")
	var te *tenancy.TenantError
	if !errors.Is(err, tenancy.ErrTenantNotAllowed) || !errors.As(err, &te) || te.Requested != "b" || te.Tenant != "a" || te.Identity != "tenant-a" {
		t.Errorf("tenant-a submitting for b: %v, want a TenantError", err)
	}
	if !strings.Contains(err.Error(), `bound to tenant "a"`) {
		t.Errorf("the error does not say why: %v", err)
	}
	if !a.Sees("a") || a.Sees("b") || a.Sees("") {
		t.Error("tenant-a sees another tenant's jobs, or not its own")
	}

	admin, err := p.Resolve("admin")
	if err != nil || admin.Restricted() || !admin.Sees("b") || !admin.Sees("") {
		t.Errorf("admin = %+v, %v: want to see everything", admin, err)
	}
	if got, err := admin.SubmitTenant("b"); got != "b" || err != nil {
		t.Errorf("admin submitting for b: %q, %v", got, err)
	}
	if got, _ := admin.SubmitTenant(""); got != "" {
		t.Errorf("admin without tenant stamps %q", got)
	}
	ops, _ := p.Resolve("ops")
	if got, _ := ops.SubmitTenant(""); got != "ops" {
		t.Errorf("an admin with a tenant stamps %q, want ops", got)
	}
	if got, _ := ops.SubmitTenant("a"); got != "a" || !ops.Sees("a") {
		t.Error("an admin with a tenant is restricted")
	}
	for _, pr := range []tenancy.Principal{a, admin, ops, {}} {
		if pr.String() == "" {
			t.Error("a principal without a name for the logs")
		}
	}
}

// Where identities are required, nobody anonymous or unbound gets in;
// where they are not, both act on every tenant.
func TestRequireIdentity(t *testing.T) {
	t.Parallel()
	req := policy(t, true)
	if _, err := req.Resolve(""); !errors.Is(err, tenancy.ErrIdentityRequired) {
		t.Errorf("anonymous: %v, want ErrIdentityRequired", err)
	}
	if _, err := req.Resolve("stranger"); !errors.Is(err, tenancy.ErrUnboundIdentity) {
		t.Errorf("unbound: %v, want ErrUnboundIdentity", err)
	}
	open := policy(t, false)
	for _, id := range []string{"", "stranger"} {
		pr, err := open.Resolve(id)
		if err != nil || pr.Restricted() || !pr.Sees("a") {
			t.Errorf("%q without require_identity: %+v, %v; want unrestricted", id, pr, err)
		}
	}
	// A bound client is held to its tenant either way.
	if a, _ := open.Resolve("tenant-a"); !a.Restricted() {
		t.Error("tenant-a unrestricted without require_identity")
	}
	var none *tenancy.Policy
	if pr, err := none.Resolve("x"); err != nil || pr.Restricted() || none.RequireIdentity() || none.Known("x") {
		t.Errorf("nil policy: %+v, %v", pr, err)
	}
	if !req.Known("tenant-a") || req.Known("stranger") {
		t.Error("Known")
	}
}

func TestValidIdentity(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "tenant-a", "client_1", "UD3X", strings.Repeat("x", tenancy.MaxIdentityLength)} {
		if err := tenancy.ValidIdentity(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "*", ">", "a b", "a\tb", "a\x00", "a\nb", "\u00a0", "\xff", strings.Repeat("x", tenancy.MaxIdentityLength+1)} {
		err := tenancy.ValidIdentity(bad)
		if !errors.Is(err, tenancy.ErrInvalidIdentity) {
			t.Errorf("%q: %v, want ErrInvalidIdentity", bad, err)
		}
	}
	if _, err := tenancy.New(tenancy.Config{Identities: map[string]tenancy.Binding{"a.b": {Tenant: "x"}}}); !errors.Is(err, tenancy.ErrInvalidIdentity) {
		t.Errorf("New with a dotted identity: %v", err)
	}
	if _, err := tenancy.New(tenancy.Config{Identities: map[string]tenancy.Binding{"a": {}}}); err == nil || !strings.Contains(err.Error(), "identity a: no tenant") {
		t.Errorf("New with an empty binding: %v", err)
	}
	if _, err := tenancy.New(tenancy.Config{Identities: map[string]tenancy.Binding{"a": {Tenant: "x\x01"}}}); err == nil {
		t.Error("New with a control character in a tenant: no error")
	}
	if _, err := tenancy.New(tenancy.Config{Identities: map[string]tenancy.Binding{"a": {Tenant: strings.Repeat("t", tenancy.MaxTenantLength+1)}}}); err == nil {
		t.Error("New with a long tenant: no error")
	}
}

// The YAML section is read strictly, and every error names its line.
func TestUnmarshalYAML(t *testing.T) {
	t.Parallel()
	var cfg struct {
		Clients tenancy.Config `yaml:"clients"`
	}
	good := "clients:\n  require_identity: true\n  identities:\n    tenant-a: {tenant: a}\n    admin:\n      admin: true\n"
	if err := yaml.Unmarshal([]byte(good), &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]tenancy.Binding{"tenant-a": {Tenant: "a"}, "admin": {Admin: true}}
	if !cfg.Clients.RequireIdentity || len(cfg.Clients.Identities) != 2 || cfg.Clients.Identities["tenant-a"] != want["tenant-a"] || cfg.Clients.Identities["admin"] != want["admin"] {
		t.Errorf("decoded %+v", cfg.Clients)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown key":         {"clients:\n  require_identiy: true\n", `line 2: clients: unknown key "require_identiy"`},
		"not a mapping":       {"clients: [a]\n", "line 1: clients: want a mapping"},
		"bad bool":            {"clients:\n  require_identity: yes please\n", "line 2: clients.require_identity: want true or false"},
		"identities list":     {"clients:\n  identities: [a]\n", "line 2: clients.identities: want a mapping"},
		"dotted identity":     {"clients:\n  identities:\n    a.b: {tenant: x}\n", "line 3: clients.identities: tenancy: invalid identity"},
		"wildcard identity":   {"clients:\n  identities:\n    '>': {tenant: x}\n", "line 3: clients.identities: tenancy: invalid identity"},
		"twice":               {"clients:\n  identities:\n    a: {tenant: x}\n    a: {tenant: y}\n", "line 4: clients.identities: identity a given twice"},
		"binding scalar":      {"clients:\n  identities:\n    a: x\n", "line 3: clients.identities.a: want {tenant: NAME}"},
		"binding unknown key": {"clients:\n  identities:\n    a:\n      tenant: x\n      tennant: y\n", `line 5: clients.identities.a: unknown key "tennant"`},
		"no tenant":           {"clients:\n  identities:\n    a: {admin: false}\n", "line 3: clients.identities.a: no tenant"},
		"numeric tenant":      {"clients:\n  identities:\n    a: {tenant: 7}\n", "line 3: clients.identities.a.tenant: want a string"},
		"key twice":           {"clients:\n  identities:\n    a: {tenant: x, tenant: y}\n", "line 3: clients.identities.a: tenant given twice"},
		"section key twice":   {"clients:\n  require_identity: true\n  require_identity: false\n", "line 3: clients: require_identity given twice"},
	} {
		err := yaml.Unmarshal([]byte(tc.yaml), &cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	// An empty section is no section.
	var empty struct {
		Clients tenancy.Config `yaml:"clients"`
	}
	if err := yaml.Unmarshal([]byte("clients:\n"), &empty); err != nil || empty.Clients.RequireIdentity || empty.Clients.Identities != nil {
		t.Errorf("empty section: %+v, %v", empty.Clients, err)
	}
}

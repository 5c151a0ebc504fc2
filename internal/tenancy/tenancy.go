// Package tenancy binds client identities to tenants and decides what a
// client may do: for which tenant it submits, and whose jobs it sees.
//
// It knows nothing of NATS or HTTP. An identity is a name the transport
// vouches for: a NATS user, which the server's permissions hold to the
// subjects that name it (docs/security.md); later, the name of an HTTP API
// key. A Policy, built from a Config, resolves an identity to a Principal,
// and the Principal answers every question the scheduler asks about it.
package tenancy

import (
	"errors"
	"fmt"
	"sort"
	"unicode"
)

// Bounds on names.
const (
	MaxIdentityLength = 128
	MaxTenantLength   = 128
)

// Errors. Every error a Policy or a Principal returns wraps one of them.
var (
	// ErrInvalidIdentity: not one subject token of at most
	// MaxIdentityLength bytes (no dots, wildcards, spaces or control
	// characters).
	ErrInvalidIdentity = errors.New("tenancy: invalid identity")
	// ErrIdentityRequired: a request that names no identity, where
	// identities are required.
	ErrIdentityRequired = errors.New("tenancy: client identity required")
	// ErrUnboundIdentity: an identity bound to no tenant and not an
	// administrator, where identities are required.
	ErrUnboundIdentity = errors.New("tenancy: identity not bound to a tenant")
	// ErrTenantNotAllowed: a request for a tenant other than the client's own.
	ErrTenantNotAllowed = errors.New("tenancy: tenant not allowed")
)

// TenantError is a request of a tenant-bound client for another tenant.
type TenantError struct {
	Identity  string // who asked
	Tenant    string // its tenant
	Requested string // the tenant it asked for
}

func (e *TenantError) Error() string {
	return fmt.Sprintf("identity %s is bound to tenant %q and may not act for tenant %q", e.Identity, e.Tenant, e.Requested)
}

// Is makes errors.Is(err, ErrTenantNotAllowed) true.
func (e *TenantError) Is(target error) bool { return target == ErrTenantNotAllowed }

// Binding is what one identity is: a tenant's client, an administrator, or
// both (an administrator whose requests that name no tenant are its tenant's).
type Binding struct {
	// Tenant the identity acts for: it submits only for it and sees only
	// its jobs. Required unless Admin.
	Tenant string `yaml:"tenant"`
	// Admin sees and acts on every tenant's jobs.
	Admin bool `yaml:"admin"`
}

// Config binds identities to tenants. The zero value binds nobody and
// requires nothing: every client may act on every tenant, as before
// tenancy existed.
type Config struct {
	// RequireIdentity refuses requests that name no identity, and those of
	// identities that are neither bound to a tenant nor administrators.
	// Without it, such clients act on every tenant.
	RequireIdentity bool `yaml:"require_identity"`
	// Identities maps an identity (a NATS user) to its binding.
	Identities map[string]Binding `yaml:"identities"`
}

// Validate reports the first invalid identity or binding, in name order.
func (c Config) Validate() error {
	names := make([]string, 0, len(c.Identities))
	for id := range c.Identities {
		names = append(names, id)
	}
	sort.Strings(names)
	for _, id := range names {
		if err := ValidIdentity(id); err != nil {
			return err
		}
		if err := c.Identities[id].validate(); err != nil {
			return fmt.Errorf("identity %s: %w", id, err)
		}
	}
	return nil
}

func (b Binding) validate() error {
	if b.Tenant == "" && !b.Admin {
		return errors.New("no tenant: bind it to a tenant (tenant: NAME) or make it an administrator (admin: true)")
	}
	return ValidTenant(b.Tenant)
}

// ValidIdentity checks that id can name a client in a subject: one token,
// non-empty, at most MaxIdentityLength bytes, no '.', '*', '>', spaces or
// control characters.
func ValidIdentity(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidIdentity)
	}
	if len(id) > MaxIdentityLength {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidIdentity, len(id), MaxIdentityLength)
	}
	for _, r := range id {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("%w %q: one subject token, without '.', '*', '>', spaces or control characters", ErrInvalidIdentity, id)
		}
	}
	return nil
}

// ValidTenant checks a tenant name: at most MaxTenantLength bytes, no
// control characters. The empty tenant is valid (no tenant).
func ValidTenant(tenant string) error {
	if len(tenant) > MaxTenantLength {
		return fmt.Errorf("tenant: %d bytes, at most %d", len(tenant), MaxTenantLength)
	}
	for _, r := range tenant {
		if unicode.IsControl(r) {
			return fmt.Errorf("tenant %q: control characters are not allowed", tenant)
		}
	}
	return nil
}

// Policy resolves identities to principals. A nil *Policy binds nobody and
// requires nothing. It is immutable and safe for concurrent use.
type Policy struct {
	require bool
	ids     map[string]Binding
}

// New validates cfg and returns its policy.
func New(cfg Config) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Policy{require: cfg.RequireIdentity, ids: make(map[string]Binding, len(cfg.Identities))}
	for id, b := range cfg.Identities {
		p.ids[id] = b
	}
	return p, nil
}

// RequireIdentity reports whether requests must name a bound identity.
func (p *Policy) RequireIdentity() bool { return p != nil && p.require }

// Known reports whether identity is configured (a tenant's client or an
// administrator).
func (p *Policy) Known(identity string) bool {
	if p == nil {
		return false
	}
	_, ok := p.ids[identity]
	return ok
}

// Resolve returns the principal of identity ("" for a request that names
// none). It fails with ErrInvalidIdentity for a name no client can have,
// and, where identities are required, with ErrIdentityRequired for none and
// ErrUnboundIdentity for one neither bound nor an administrator.
func (p *Policy) Resolve(identity string) (Principal, error) {
	if identity == "" {
		if p.RequireIdentity() {
			return Principal{}, fmt.Errorf("%w: this scheduler answers only clients that name themselves (sys.job.<verb>.<identity>)", ErrIdentityRequired)
		}
		return Principal{}, nil
	}
	if err := ValidIdentity(identity); err != nil {
		return Principal{}, err
	}
	b, ok := Binding{}, false
	if p != nil {
		b, ok = p.ids[identity]
	}
	if !ok {
		if p.RequireIdentity() {
			return Principal{}, fmt.Errorf("%w: identity %s is not in the scheduler's clients.identities", ErrUnboundIdentity, identity)
		}
		return Principal{Identity: identity}, nil
	}
	return Principal{Identity: identity, Tenant: b.Tenant, Admin: b.Admin, restricted: !b.Admin}, nil
}

// Principal is a resolved client: who it is and what it may do. The zero
// value is an anonymous client with no restriction (no policy, or one that
// requires nothing).
type Principal struct {
	Identity string // "" for anonymous
	Tenant   string // its tenant; "" for none
	Admin    bool
	// restricted: a tenant's client, which sees and acts on its tenant only.
	restricted bool
}

// Restricted reports whether the principal sees and acts on its own
// tenant's jobs only.
func (p Principal) Restricted() bool { return p.restricted }

// SubmitTenant returns the tenant a job the principal submits for requested
// is recorded under: requested, or the principal's tenant when requested is
// empty. A tenant's client asking for another tenant gets a *TenantError.
func (p Principal) SubmitTenant(requested string) (string, error) {
	switch {
	case requested == "":
		return p.Tenant, nil
	case p.restricted && requested != p.Tenant:
		return "", &TenantError{Identity: p.Identity, Tenant: p.Tenant, Requested: requested}
	}
	return requested, nil
}

// Sees reports whether the principal may see and act on a job of tenant.
// A job it may not see is, to it, a job that does not exist.
func (p Principal) Sees(tenant string) bool { return !p.restricted || tenant == p.Tenant }

// String names the principal for logs.
func (p Principal) String() string {
	switch {
	case p.Identity == "":
		return "anonymous"
	case p.Admin:
		return p.Identity + " (admin)"
	case p.restricted:
		return p.Identity + " (tenant " + p.Tenant + ")"
	}
	return p.Identity + " (unbound)"
}

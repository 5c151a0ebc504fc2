package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/cortex-os/core/internal/tenancy"
)

// Role is what a key may do. Each role may do what the one before it may.
type Role int

// Roles, from least to most.
const (
	// RoleViewer reads jobs (its tenant's), their events, the workers, the
	// dead-letter queue and the policy.
	RoleViewer Role = iota + 1
	// RoleSubmitter also submits and cancels jobs and evaluates the policy.
	RoleSubmitter
	// RoleAdmin also re-drives dead letters; a key of this role with no
	// tenant acts on every tenant.
	RoleAdmin
)

var roleNames = map[Role]string{RoleViewer: "viewer", RoleSubmitter: "submitter", RoleAdmin: "admin"}

func (r Role) String() string {
	if n, ok := roleNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole reads viewer, submitter or admin.
func ParseRole(s string) (Role, error) {
	for r, n := range roleNames {
		if n == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("role %q: want viewer, submitter or admin", s)
}

// ErrInvalidKeys: an API key file that cannot be used.
var ErrInvalidKeys = errors.New("gateway: invalid API keys")

// KeyConfig is one API key as the key file lists it. The key itself is not
// stored, only its SHA-256.
type KeyConfig struct {
	// ID names the key in logs and is its tenancy identity: one subject
	// token (tenancy.ValidIdentity).
	ID string `yaml:"id"`
	// SHA256 is the lower-case hex SHA-256 of the key (HashKey).
	SHA256 string `yaml:"sha256"`
	// Tenant the key acts for; required unless Role is admin.
	Tenant string `yaml:"tenant"`
	// Role: viewer, submitter or admin.
	Role string `yaml:"role"`
}

// KeysFile is the API key file (--api-keys):
//
//	keys:
//	  - id: ci-a
//	    sha256: 5e88...   # sha256 hex of the key
//	    tenant: a
//	    role: submitter
type KeysFile struct {
	Keys []KeyConfig `yaml:"keys"`
}

// key is a resolved API key.
type key struct {
	principal tenancy.Principal
	role      Role
}

// Keys are the API keys a gateway accepts. The zero value (nil) accepts
// none. Immutable.
type Keys struct {
	byHash map[string]key
}

// HashKey is the SHA-256 of an API key, in lower-case hex, as the key file
// stores it.
func HashKey(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:])
}

// NewKey returns a new random API key: "cx_" and 43 base32 characters (215
// bits).
func NewKey() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 43)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[b[i]%32]
	}
	return "cx_" + string(b), nil
}

// LoadKeys reads and checks an API key file.
func LoadKeys(path string) (*Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKeys, err)
	}
	return ParseKeys(data)
}

// ParseKeys reads and checks an API key file's content: unknown fields, a
// hash that is not 64 hex digits, a hash or id given twice, an unknown
// role, a non-admin key with no tenant are errors.
func ParseKeys(data []byte) (*Keys, error) {
	var f KeysFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKeys, err)
	}
	return NewKeys(f.Keys)
}

// NewKeys checks the keys and returns them.
func NewKeys(list []KeyConfig) (*Keys, error) {
	cfg := tenancy.Config{RequireIdentity: true, Identities: map[string]tenancy.Binding{}}
	roles := map[string]Role{}
	hashes := map[string]string{}
	for i, k := range list {
		role, err := ParseRole(k.Role)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d (%s): %v", ErrInvalidKeys, i+1, k.ID, err)
		}
		h := strings.ToLower(k.SHA256)
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%w: key %d (%s): sha256 must be 64 hex digits (the SHA-256 of the key)", ErrInvalidKeys, i+1, k.ID)
		}
		if other, dup := hashes[h]; dup {
			return nil, fmt.Errorf("%w: keys %s and %s have the same hash", ErrInvalidKeys, other, k.ID)
		}
		if _, dup := cfg.Identities[k.ID]; dup {
			return nil, fmt.Errorf("%w: key id %s given twice", ErrInvalidKeys, k.ID)
		}
		hashes[h] = k.ID
		cfg.Identities[k.ID] = tenancy.Binding{Tenant: k.Tenant, Admin: role == RoleAdmin && k.Tenant == ""}
		roles[k.ID] = role
	}
	pol, err := tenancy.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKeys, err)
	}
	ks := &Keys{byHash: make(map[string]key, len(hashes))}
	for h, id := range hashes {
		p, err := pol.Resolve(id)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidKeys, err)
		}
		ks.byHash[h] = key{principal: p, role: roles[id]}
	}
	return ks, nil
}

// Len is the number of keys.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.byHash)
}

// lookup finds the key whose hash is apiKey's.
func (k *Keys) lookup(apiKey string) (key, bool) {
	if k == nil || apiKey == "" {
		return key{}, false
	}
	v, ok := k.byHash[HashKey(apiKey)]
	return v, ok
}

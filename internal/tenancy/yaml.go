package tenancy

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML reads a clients section strictly: an unknown key, a value of
// the wrong type, an identity given twice, an invalid identity or binding is
// an error naming its line.
//
//	require_identity: true
//	identities:
//	  tenant-a: {tenant: a}
//	  admin: {admin: true}
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	var out Config
	if isNull(n) {
		*c = out
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return lineErr(n, "clients: want a mapping (require_identity, identities)")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return lineErr(k, "clients: %s given twice", k.Value)
		}
		seen[k.Value] = true
		switch k.Value {
		case "require_identity":
			if err := scalar(v, "!!bool", &out.RequireIdentity); err != nil {
				return lineErr(v, "clients.require_identity: %v", err)
			}
		case "identities":
			ids, err := identities(v)
			if err != nil {
				return err
			}
			out.Identities = ids
		default:
			return lineErr(k, "clients: unknown key %q (want require_identity, identities)", k.Value)
		}
	}
	*c = out
	return nil
}

func identities(n *yaml.Node) (map[string]Binding, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, lineErr(n, "clients.identities: want a mapping of identity to binding ({tenant: NAME} or {admin: true})")
	}
	out := make(map[string]Binding, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		id := k.Value
		if k.Kind != yaml.ScalarNode {
			return nil, lineErr(k, "clients.identities: an identity is a name")
		}
		if _, dup := out[id]; dup {
			return nil, lineErr(k, "clients.identities: identity %s given twice", id)
		}
		if err := ValidIdentity(id); err != nil {
			return nil, lineErr(k, "clients.identities: %v", err)
		}
		b, err := binding(id, v)
		if err != nil {
			return nil, err
		}
		out[id] = b
	}
	return out, nil
}

func binding(id string, n *yaml.Node) (Binding, error) {
	var b Binding
	if n.Kind != yaml.MappingNode {
		return b, lineErr(n, "clients.identities.%s: want {tenant: NAME} or {admin: true}", id)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return b, lineErr(k, "clients.identities.%s: %s given twice", id, k.Value)
		}
		seen[k.Value] = true
		switch k.Value {
		case "tenant":
			if err := scalar(v, "!!str", &b.Tenant); err != nil {
				return b, lineErr(v, "clients.identities.%s.tenant: %v", id, err)
			}
		case "admin":
			if err := scalar(v, "!!bool", &b.Admin); err != nil {
				return b, lineErr(v, "clients.identities.%s.admin: %v", id, err)
			}
		default:
			return b, lineErr(k, "clients.identities.%s: unknown key %q (want tenant, admin)", id, k.Value)
		}
	}
	if err := b.validate(); err != nil {
		return b, lineErr(n, "clients.identities.%s: %v", id, err)
	}
	return b, nil
}

// scalar decodes a scalar node of the given tag into v.
func scalar(n *yaml.Node, tag string, v any) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a %s value", tag[2:])
	}
	if tag == "!!str" && n.ShortTag() != "!!str" {
		return fmt.Errorf("want a string, got %q (quote it)", n.Value)
	}
	if tag == "!!bool" && n.ShortTag() != "!!bool" {
		return fmt.Errorf("want true or false, got %q", n.Value)
	}
	return n.Decode(v)
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func lineErr(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("line %d: "+format, append([]any{n.Line}, args...)...)
}

package safety

import (
	_ "embed"
	"fmt"
	"sync"
)

// defaultPolicyYAML is config/policy.yaml, the shipped default policy. A
// go:embed pattern cannot leave the package's directory, so the package
// keeps a copy; a test fails when the two differ.
//
//go:embed default_policy.yaml
var defaultPolicyYAML []byte

// DefaultPolicyYAML returns the text of the shipped default policy,
// config/policy.yaml.
func DefaultPolicyYAML() []byte { return append([]byte(nil), defaultPolicyYAML...) }

var defaultPolicy = sync.OnceValues(func() (*Policy, error) {
	p, err := ParsePolicy(defaultPolicyYAML)
	if err != nil {
		return nil, fmt.Errorf("safety: the shipped default policy: %w", err)
	}
	return p, nil
})

// DefaultPolicy is the shipped default policy, config/policy.yaml: what a
// scheduler uses when it is given no policy. It denies the topic
// sys.destroy (rule forbidden-topic, reason "forbidden topic") and allows
// everything else.
func DefaultPolicy() *Policy {
	p, err := defaultPolicy()
	if err != nil {
		panic(err) // the embedded file is tested; it cannot be invalid
	}
	return p
}

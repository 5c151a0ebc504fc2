package echo

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Capabilities is a --capabilities flag: a comma-separated list ("gpu,python"),
// the flag may be repeated. It is a pflag.Value.
type Capabilities []string

// String implements pflag.Value.
func (c *Capabilities) String() string { return strings.Join(*c, ",") }

// Type implements pflag.Value.
func (c *Capabilities) Type() string { return "a,b,..." }

// Set implements pflag.Value: it adds the capabilities in s.
func (c *Capabilities) Set(s string) error {
	var add []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
			return fmt.Errorf("capabilities %q: an empty capability (want a,b,...)", s)
		case strings.ContainsAny(item, " \t\r\n="):
			return fmt.Errorf("capabilities %q: capability %q has a blank or '='", s, item)
		}
		if !slices.Contains(*c, item) && !slices.Contains(add, item) {
			add = append(add, item)
		}
	}
	*c = append(*c, add...)
	return nil
}

// Labels is a --labels flag: comma-separated key=value pairs
// ("gpu=h100,region=eu"); the flag may be repeated. It is a pflag.Value.
type Labels map[string]string

// String implements pflag.Value: the pairs sorted by key.
func (l *Labels) String() string {
	keys := make([]string, 0, len(*l))
	for k := range *l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + (*l)[k]
	}
	return strings.Join(keys, ",")
}

// Type implements pflag.Value.
func (l *Labels) Type() string { return "k=v,..." }

// Set implements pflag.Value: it adds the labels in s. A key given twice
// with different values is an error.
func (l *Labels) Set(s string) error {
	add := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return fmt.Errorf("labels %q: %q is not key=value", s, strings.TrimSpace(pair))
		case k == "":
			return fmt.Errorf("labels %q: %q has an empty key", s, strings.TrimSpace(pair))
		case v == "":
			return fmt.Errorf("labels %q: %q has an empty value", s, strings.TrimSpace(pair))
		case strings.ContainsAny(k+v, " \t\r\n="):
			return fmt.Errorf("labels %q: %q has a blank or a second '='", s, strings.TrimSpace(pair))
		}
		if old, dup := add[k]; dup && old != v {
			return fmt.Errorf("labels %q: %s given twice (%s, %s)", s, k, old, v)
		}
		if old, dup := (*l)[k]; dup && old != v {
			return fmt.Errorf("labels %q: %s given twice (%s, %s)", s, k, old, v)
		}
		add[k] = v
	}
	if *l == nil {
		*l = Labels{}
	}
	maps.Copy(*l, add)
	return nil
}

// ValidatePool checks a --pool value: one word, as pool names in the
// scheduler's placement config are (letters, digits, '-', '_').
func ValidatePool(pool string) error {
	for _, r := range pool {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("pool %q: use letters, digits, '-' and '_' only", pool)
		}
	}
	return nil
}

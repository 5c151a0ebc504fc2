package safety

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// MaxPolicyBytes is the largest policy file accepted: a policy is a few
// kilobytes; anything this large is a mistake or an attack.
const MaxPolicyBytes = 1 << 20

// ErrInvalidPolicy is matched (errors.Is) by every error that refuses a
// policy: a *PolicyError.
var ErrInvalidPolicy = errors.New("safety: invalid policy")

// FieldError is one problem with a policy, where it is in the file. Line and
// Col are 1-based; 0 when the problem has no place (the file is empty, too
// large, or could not be read).
type FieldError struct {
	Line, Col int
	// Field is the path of the value: "rules[2].match.topics[0]".
	Field string
	Msg   string
}

func (e FieldError) String() string {
	var b strings.Builder
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		if e.Col > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Col))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// PolicyError lists every problem found in a policy, in the order of the
// file. errors.Is(err, ErrInvalidPolicy) holds for it.
type PolicyError struct {
	// File is the policy's path, when it was read from one.
	File   string
	Errors []FieldError
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	b.WriteString("invalid policy")
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	switch len(e.Errors) {
	case 0:
	case 1:
		b.WriteString(": ")
		b.WriteString(e.Errors[0].String())
	default:
		fmt.Fprintf(&b, ": %d errors:", len(e.Errors))
		for _, fe := range e.Errors {
			b.WriteString("\n  ")
			b.WriteString(fe.String())
		}
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalidPolicy) hold.
func (e *PolicyError) Is(target error) bool { return target == ErrInvalidPolicy }

// Policy is a validated, compiled policy. It is immutable: a Kernel installs
// it, and may share it with others. Rules are tried in order; the first that
// matches and decides makes the verdict, else the default does.
type Policy struct {
	// Version names the policy; every verdict carries it.
	Version string
	// Default decides a job no rule decides: Allow or Deny.
	Default Decision
	// DefaultReason is the reason of a default verdict.
	DefaultReason string

	rules []*rule
	// hasThrottle says that some rule throttles.
	hasThrottle bool
}

// NumRules is the number of rules.
func (p *Policy) NumRules() int { return len(p.rules) }

// RuleIDs returns the ids of the rules, in order.
func (p *Policy) RuleIDs() []string {
	ids := make([]string, len(p.rules))
	for i, r := range p.rules {
		ids[i] = r.id
	}
	return ids
}

// LoadPolicy reads and parses the policy file at path. Any problem,
// including a file that cannot be read, is a *PolicyError.
func LoadPolicy(path string) (*Policy, error) {
	data, err := readPolicyFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(data)
	if err != nil {
		var pe *PolicyError
		if errors.As(err, &pe) {
			pe.File = path
		}
		return nil, err
	}
	return p, nil
}

// readPolicyFile reads path, refusing a file larger than MaxPolicyBytes
// and anything but a regular file (ErrNotRegular).
func readPolicyFile(path string) ([]byte, error) {
	data, err := readRegular(path)
	if err != nil {
		return nil, &PolicyError{File: path, Errors: []FieldError{{Msg: "cannot read the file: " + pathless(err)}}}
	}
	if len(data) > MaxPolicyBytes {
		return nil, &PolicyError{File: path, Errors: []FieldError{{Msg: fmt.Sprintf("larger than %d bytes", MaxPolicyBytes)}}}
	}
	return data, nil
}

// pathless is err without the path a *fs.PathError repeats.
func pathless(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// ParsePolicy parses and validates a policy. It reports every problem it
// finds, each with its line and column, in one *PolicyError.
func ParsePolicy(data []byte) (p *Policy, err error) {
	if len(data) > MaxPolicyBytes {
		return nil, &PolicyError{Errors: []FieldError{{Msg: fmt.Sprintf("larger than %d bytes", MaxPolicyBytes)}}}
	}
	var doc yaml.Node
	if err := safeUnmarshal(data, &doc); err != nil {
		return nil, &PolicyError{Errors: []FieldError{yamlError(err)}}
	}
	ps := &parser{}
	p = ps.policy(&doc)
	if len(ps.errs) > 0 {
		sortErrors(ps.errs)
		return nil, &PolicyError{Errors: ps.errs}
	}
	return p, nil
}

// safeUnmarshal is yaml.Unmarshal that turns a panic of the decoder (on
// hostile input) into an error, and refuses a second document.
func safeUnmarshal(data []byte, doc *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty: reported as a missing version
		}
		return err
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return fmt.Errorf("yaml: line %d: a policy is one YAML document; a second one starts here", more.Line)
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// yamlError places a YAML syntax error on the line its message names.
func yamlError(err error) FieldError {
	msg := err.Error()
	fe := FieldError{Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		// "yaml: line 3: did not find ..." -> "did not find ..."
		if i := strings.Index(msg, m[0]+": "); i >= 0 {
			fe.Msg = msg[i+len(m[0])+2:]
		}
	}
	fe.Msg = strings.TrimPrefix(fe.Msg, "yaml: ")
	return fe
}

// sortErrors orders errors by place, keeping the order of those at the same
// place (a stable insertion sort: lists are short).
func sortErrors(errs []FieldError) {
	for i := 1; i < len(errs); i++ {
		for j := i; j > 0 && less(errs[j], errs[j-1]); j-- {
			errs[j], errs[j-1] = errs[j-1], errs[j]
		}
	}
}

func less(a, b FieldError) bool {
	if a.Line != b.Line {
		return a.Line < b.Line
	}
	return a.Col < b.Col
}

// ---- the walk over the YAML tree ----

type parser struct {
	errs []FieldError
}

func (ps *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	fe := FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		fe.Line, fe.Col = n.Line, n.Column
	}
	ps.errs = append(ps.errs, fe)
}

// deref follows an alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// entry is a key of a mapping and its value.
type entry struct {
	key, val *yaml.Node
}

// mapping checks that n is a mapping with only the known keys, each once,
// and returns its entries by key. It returns nil if n is not a mapping.
func (ps *parser) mapping(n *yaml.Node, field string, known ...string) map[string]entry {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		ps.errorf(n, field, "want a mapping (key: value lines)")
		return nil
	}
	out := make(map[string]entry, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			ps.errorf(n.Content[i], field, "a key must be a plain name")
			continue
		}
		name := k.Value
		sub := join(field, name)
		if !contains(known, name) {
			ps.errorf(k, sub, "unknown key %q (known: %s)", name, strings.Join(known, ", "))
			continue
		}
		if prev, dup := out[name]; dup {
			ps.errorf(k, sub, "duplicate key (first at line %d)", prev.key.Line)
			continue
		}
		out[name] = entry{key: k, val: v}
	}
	return out
}

func join(field, name string) string {
	if field == "" {
		return name
	}
	return field + "." + name
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// scalar returns the value of a scalar node; ok is false (and an error
// reported) for anything else, and for a null when required.
func (ps *parser) scalar(n *yaml.Node, field string) (string, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		ps.errorf(n, field, "want a single value")
		return "", false
	}
	if n.Tag == "!!null" {
		ps.errorf(n, field, "missing value")
		return "", false
	}
	return n.Value, true
}

// str returns a non-empty string value.
func (ps *parser) str(n *yaml.Node, field string) (string, bool) {
	s, ok := ps.scalar(n, field)
	if ok && strings.TrimSpace(s) == "" {
		ps.errorf(n, field, "must not be empty")
		return "", false
	}
	return s, ok
}

// integer returns a non-negative integer value.
func (ps *parser) integer(n *yaml.Node, field string, min int64) (int64, bool) {
	s, ok := ps.scalar(n, field)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
	if err != nil {
		ps.errorf(n, field, "want a whole number, got %q", s)
		return 0, false
	}
	if v < min {
		ps.errorf(n, field, "must be at least %d, got %d", min, v)
		return 0, false
	}
	return v, true
}

// list returns the items of a sequence (a single value counts as a list of
// one). An empty list is an error: leave the key out to match everything.
func (ps *parser) list(n *yaml.Node, field string) []*yaml.Node {
	n = deref(n)
	if n != nil && n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []*yaml.Node{n}
	}
	if n == nil || n.Kind != yaml.SequenceNode {
		ps.errorf(n, field, "want a list")
		return nil
	}
	if len(n.Content) == 0 {
		ps.errorf(n, field, "empty list matches nothing; leave the key out to match everything")
		return nil
	}
	return n.Content
}

func item(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// ---- the policy ----

var (
	policyKeys   = []string{"version", "default", "default_reason", "rules"}
	ruleKeys     = []string{"id", "description", "match", "when", "on_error", "decision", "reason", "throttle"}
	matchKeys    = []string{"topics", "tenants", "priorities", "capabilities", "labels", "env_vars", "payload_bytes_over", "context_bytes_over"}
	throttleKeys = []string{"rate", "per", "burst", "by", "max_keys"}
)

func (ps *parser) policy(doc *yaml.Node) *Policy {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			ps.errorf(nil, "version", "empty policy: version is required")
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == 0 {
		ps.errorf(nil, "version", "empty policy: version is required")
		return nil
	}
	m := ps.mapping(root, "", policyKeys...)
	if m == nil {
		return nil
	}
	p := &Policy{Default: Allow}
	if e, ok := m["version"]; ok {
		p.Version, _ = ps.str(e.val, "version")
	} else {
		ps.errorf(root, "version", "version is required")
	}
	if e, ok := m["default"]; ok {
		if s, ok := ps.scalar(e.val, "default"); ok {
			switch s {
			case "allow":
				p.Default = Allow
			case "deny":
				p.Default = Deny
			default:
				ps.errorf(e.val, "default", "want allow or deny, got %q", s)
			}
		}
	}
	if e, ok := m["default_reason"]; ok {
		p.DefaultReason, _ = ps.scalar(e.val, "default_reason")
	}
	if p.DefaultReason == "" && p.Default == Deny {
		p.DefaultReason = "no rule of the policy allows this job (default: deny)"
	}
	if e, ok := m["rules"]; ok {
		rules := deref(e.val)
		switch {
		case rules != nil && rules.Kind == yaml.ScalarNode && rules.Tag == "!!null":
			// "rules:" with nothing: no rules.
		case rules == nil || rules.Kind != yaml.SequenceNode:
			ps.errorf(rules, "rules", "want a list of rules")
		default:
			ids := make(map[string]int, len(rules.Content))
			for i, rn := range rules.Content {
				r := ps.rule(rn, item("rules", i))
				if r == nil {
					continue
				}
				if r.id != "" {
					if line, dup := ids[r.id]; dup {
						ps.errorf(r.idNode, item("rules", i)+".id", "duplicate rule id %q (first at line %d)", r.id, line)
					} else {
						ids[r.id] = r.idNode.Line
					}
				}
				r.idNode = nil
				p.rules = append(p.rules, r)
				if r.throttle != nil {
					p.hasThrottle = true
				}
			}
		}
	}
	return p
}

func (ps *parser) rule(n *yaml.Node, field string) *rule {
	m := ps.mapping(n, field, ruleKeys...)
	if m == nil {
		return nil
	}
	r := &rule{payloadOver: -1, contextOver: -1}
	if e, ok := m["id"]; ok {
		if id, ok := ps.str(e.val, field+".id"); ok {
			r.id, r.idNode = id, deref(e.val)
		}
	} else {
		ps.errorf(n, field+".id", "id is required")
	}
	if e, ok := m["description"]; ok {
		if d := deref(e.val); d == nil || d.Kind != yaml.ScalarNode {
			ps.errorf(d, field+".description", "want text")
		}
	}
	if e, ok := m["match"]; ok {
		ps.match(e.val, field+".match", r)
	}
	if e, ok := m["when"]; ok {
		if src, ok := ps.str(e.val, field+".when"); ok {
			ps.compileWhen(deref(e.val), field+".when", src, r)
		}
	}
	decided := false
	if e, ok := m["decision"]; ok {
		if s, ok := ps.scalar(e.val, field+".decision"); ok {
			switch s {
			case "allow":
				r.decision, decided = Allow, true
			case "deny":
				r.decision, decided = Deny, true
			case "throttle":
				r.decision, decided = Throttle, true
			default:
				ps.errorf(e.val, field+".decision", "want allow, deny or throttle, got %q", s)
			}
		}
	} else {
		ps.errorf(n, field+".decision", "decision is required (allow, deny or throttle)")
	}
	if e, ok := m["reason"]; ok {
		r.reason, _ = ps.scalar(e.val, field+".reason")
	}
	if decided && r.decision != Allow && strings.TrimSpace(r.reason) == "" {
		pos := n
		if e, ok := m["reason"]; ok {
			pos = e.val
		}
		ps.errorf(pos, field+".reason", "a %s rule needs a reason: it reaches the client", r.decision)
	}
	ps.onError(m, n, field, r, decided)
	e, hasThrottle := m["throttle"]
	switch {
	case hasThrottle && decided && r.decision != Throttle:
		ps.errorf(e.key, field+".throttle", "throttle settings belong to a rule with decision: throttle")
	case hasThrottle:
		r.throttle = ps.throttle(e.val, field+".throttle")
	case decided && r.decision == Throttle:
		ps.errorf(n, field+".throttle", "a throttle rule needs throttle: {rate, per}")
	}
	return r
}

// onError reads the rule's on_error, or sets the default for its decision.
func (ps *parser) onError(m map[string]entry, n *yaml.Node, field string, r *rule, decided bool) {
	e, ok := m["on_error"]
	if !ok {
		r.onError = defaultOnError(r.decision)
		return
	}
	f := field + ".on_error"
	s, ok := ps.scalar(e.val, f)
	if !ok {
		return
	}
	pos := deref(e.val)
	switch s {
	case "deny":
		r.onError = onErrorDeny
	case "skip":
		r.onError = onErrorSkip
	case "throttle":
		r.onError = onErrorThrottle
		if decided && r.decision != Throttle {
			ps.errorf(pos, f, "on_error: throttle belongs to a rule with decision: throttle (it needs the rule's rate for a retry-after); use deny or skip")
		}
	case "allow":
		ps.errorf(pos, f, "on_error: allow would admit a job whose condition could not be checked; use deny or skip")
	default:
		ps.errorf(pos, f, "want deny, skip or throttle, got %q", s)
	}
	if _, hasWhen := m["when"]; !hasWhen {
		ps.errorf(e.key, f, "on_error applies to a when expression, and this rule has none")
	}
}

func (ps *parser) match(n *yaml.Node, field string, r *rule) {
	if d := deref(n); d != nil && d.Kind == yaml.ScalarNode && d.Tag == "!!null" {
		return // "match:" with nothing: matches everything
	}
	m := ps.mapping(n, field, matchKeys...)
	if m == nil {
		return
	}
	if e, ok := m["topics"]; ok {
		f := field + ".topics"
		for i, it := range ps.list(e.val, f) {
			if s, ok := ps.str(it, item(f, i)); ok {
				g, err := compileTopicGlob(s)
				if err != nil {
					ps.errorf(deref(it), item(f, i), "%v", err)
					continue
				}
				r.topics = append(r.topics, g)
			}
		}
	}
	if e, ok := m["tenants"]; ok {
		r.tenants = ps.globs(e.val, field+".tenants")
	}
	if e, ok := m["priorities"]; ok {
		f := field + ".priorities"
		for i, it := range ps.list(e.val, f) {
			if s, ok := ps.str(it, item(f, i)); ok {
				prio, ok := parsePriorityName(s)
				if !ok {
					ps.errorf(deref(it), item(f, i), "want BATCH, INTERACTIVE, CRITICAL or UNSPECIFIED, got %q", s)
					continue
				}
				r.priorities |= 1 << uint(prio)
			}
		}
	}
	if e, ok := m["capabilities"]; ok {
		f := field + ".capabilities"
		for i, it := range ps.list(e.val, f) {
			if s, ok := ps.str(it, item(f, i)); ok {
				r.capabilities = append(r.capabilities, s)
			}
		}
	}
	if e, ok := m["labels"]; ok {
		f := field + ".labels"
		if d := deref(e.val); d != nil && d.Kind == yaml.MappingNode && len(d.Content) == 0 {
			ps.errorf(d, f, "empty labels match nothing; leave the key out to match everything")
		} else if d != nil && d.Kind == yaml.MappingNode {
			seen := map[string]bool{}
			for i := 0; i+1 < len(d.Content); i += 2 {
				k := deref(d.Content[i])
				key, ok := ps.str(k, f)
				if !ok {
					continue
				}
				if seen[key] {
					ps.errorf(k, join(f, key), "duplicate label")
					continue
				}
				seen[key] = true
				if v, ok := ps.scalar(d.Content[i+1], join(f, key)); ok {
					r.labels = append(r.labels, label{key, v})
				}
			}
		} else {
			ps.errorf(d, f, "want a mapping of label: value")
		}
	}
	if e, ok := m["env_vars"]; ok {
		r.envVars = ps.globs(e.val, field+".env_vars")
	}
	if e, ok := m["payload_bytes_over"]; ok {
		if v, ok := ps.integer(e.val, field+".payload_bytes_over", 0); ok {
			r.payloadOver = v
		}
	}
	if e, ok := m["context_bytes_over"]; ok {
		if v, ok := ps.integer(e.val, field+".context_bytes_over", 0); ok {
			r.contextOver = v
		}
	}
}

// globs compiles a list of name globs.
func (ps *parser) globs(n *yaml.Node, field string) []nameGlob {
	var out []nameGlob
	for i, it := range ps.list(n, field) {
		s, ok := ps.scalar(it, item(field, i))
		if !ok {
			continue
		}
		g, err := compileNameGlob(s)
		if err != nil {
			ps.errorf(deref(it), item(field, i), "%v", err)
			continue
		}
		out = append(out, g)
	}
	return out
}

func (ps *parser) throttle(n *yaml.Node, field string) *throttleSpec {
	m := ps.mapping(n, field, throttleKeys...)
	if m == nil {
		return nil
	}
	t := &throttleSpec{by: byTenant, maxKeys: DefaultThrottleKeys}
	ok := true
	if e, has := m["rate"]; has {
		v, good := ps.integer(e.val, field+".rate", 1)
		t.rate, ok = int(min(v, 1<<30)), ok && good
	} else {
		ps.errorf(n, field+".rate", "rate is required: jobs admitted per `per`")
		ok = false
	}
	if e, has := m["per"]; has {
		if s, good := ps.scalar(e.val, field+".per"); good {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				ps.errorf(deref(e.val), field+".per", "want a duration such as 1s, 1m or 1h: %v", err)
				ok = false
			case d <= 0:
				ps.errorf(deref(e.val), field+".per", "must be positive, got %s", s)
				ok = false
			default:
				t.per = d
			}
		} else {
			ok = false
		}
	} else {
		ps.errorf(n, field+".per", "per is required: the period rate is counted over (1s, 1m, ...)")
		ok = false
	}
	t.burst = t.rate
	if e, has := m["burst"]; has {
		v, good := ps.integer(e.val, field+".burst", 1)
		t.burst, ok = int(min(v, 1<<30)), ok && good
	}
	if e, has := m["by"]; has {
		if s, good := ps.scalar(e.val, field+".by"); good {
			switch s {
			case "tenant":
				t.by = byTenant
			case "topic":
				t.by = byTopic
			case "tenant_topic":
				t.by = byTenantTopic
			default:
				ps.errorf(deref(e.val), field+".by", "want tenant, topic or tenant_topic, got %q", s)
				ok = false
			}
		} else {
			ok = false
		}
	}
	if e, has := m["max_keys"]; has {
		v, good := ps.integer(e.val, field+".max_keys", 1)
		t.maxKeys, ok = int(min(v, 1<<24)), ok && good
	}
	if !ok {
		return nil
	}
	return t
}

// parsePriorityName reads BATCH, batch, JOB_PRIORITY_BATCH, ...
func parsePriorityName(s string) (pb.JobPriority, bool) {
	name := strings.ToUpper(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, "JOB_PRIORITY_")
	v, ok := pb.JobPriority_value["JOB_PRIORITY_"+name]
	if !ok || v < 0 || v >= 32 {
		return 0, false
	}
	return pb.JobPriority(v), true
}

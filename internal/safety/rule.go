package safety

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"gopkg.in/yaml.v3"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// rule is one compiled rule. Every match field that is set must hold (they
// AND together); a rule with none matches every job.
type rule struct {
	id       string
	idNode   *yaml.Node // while parsing: where the id is
	decision Decision
	reason   string

	topics       []topicGlob // any of them; nil: any topic
	tenants      []nameGlob  // any of them; nil: any tenant
	priorities   uint32      // bit per pb.JobPriority; 0: any priority
	capabilities []string    // the job requires any of them
	labels       []label     // the job requires every one of them, with this value
	envVars      []nameGlob  // the job sets any of them
	payloadOver  int64       // len(payload) > payloadOver; -1: unset
	contextOver  int64       // len(context_ptr) > contextOver; -1: unset

	when    cel.Program // nil: no expression
	whenSrc string
	onError onError // what decides when the expression fails to evaluate

	throttle *throttleSpec // for decision throttle
}

type label struct{ key, value string }

// onError is what a rule does when its when expression fails to evaluate
// (the cost limit, a missing key, an enum value out of range): never "no
// match", unless the policy says so with skip.
type onError uint8

const (
	// onErrorDefault: deny for deny rules, throttle for throttle rules,
	// skip for allow rules. Resolved when the rule is parsed.
	onErrorDefault onError = iota
	// onErrorDeny: the job is denied, by this rule.
	onErrorDeny
	// onErrorThrottle: the job is refused as retryable, by this rule (a
	// throttle rule only).
	onErrorThrottle
	// onErrorSkip: the rule does not decide; the next rules and the default
	// do.
	onErrorSkip
)

func (o onError) String() string {
	switch o {
	case onErrorDeny:
		return "deny"
	case onErrorThrottle:
		return "throttle"
	case onErrorSkip:
		return "skip"
	default:
		return "default"
	}
}

// defaultOnError is what a rule with decision d does on an evaluation error
// when it says nothing: what fails safe. A deny rule that cannot tell
// whether it applies denies; a throttle rule refuses (the client may retry);
// an allow rule grants nothing it cannot check: it is skipped, and the rules
// after it and the default decide, as if it were not there.
func defaultOnError(d Decision) onError {
	switch d {
	case Deny:
		return onErrorDeny
	case Throttle:
		return onErrorThrottle
	default:
		return onErrorSkip
	}
}

// matchFields reports whether req satisfies every match field of r. It does
// not allocate.
func (r *rule) matchFields(req *pb.JobRequest) bool {
	if r.topics != nil && !anyTopic(r.topics, req.GetTopic()) {
		return false
	}
	if r.tenants != nil && !anyName(r.tenants, req.GetTenant()) {
		return false
	}
	if r.priorities != 0 {
		p := req.GetPriority()
		if p < 0 || p >= 32 || r.priorities&(1<<uint(p)) == 0 {
			return false
		}
	}
	if r.capabilities != nil && !anyCapability(r.capabilities, req.GetRequiredCapabilities()) {
		return false
	}
	if r.labels != nil {
		have := req.GetRequiredLabels()
		for _, l := range r.labels {
			if v, ok := have[l.key]; !ok || v != l.value {
				return false
			}
		}
	}
	if r.envVars != nil && !anyEnv(r.envVars, req.GetEnvVars()) {
		return false
	}
	if r.payloadOver >= 0 && int64(len(req.GetPayload())) <= r.payloadOver {
		return false
	}
	if r.contextOver >= 0 && int64(len(req.GetContextPtr())) <= r.contextOver {
		return false
	}
	return true
}

func anyTopic(globs []topicGlob, topic string) bool {
	for i := range globs {
		if globs[i].match(topic) {
			return true
		}
	}
	return false
}

func anyName(globs []nameGlob, name string) bool {
	for i := range globs {
		if globs[i].match(name) {
			return true
		}
	}
	return false
}

func anyCapability(want, have []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

func anyEnv(globs []nameGlob, env map[string]string) bool {
	if len(env) == 0 {
		return false
	}
	for i := range globs {
		g := &globs[i]
		if g.kind == globLiteral {
			if _, ok := env[g.pattern]; ok {
				return true
			}
			continue
		}
		for name := range env {
			if g.match(name) {
				return true
			}
		}
	}
	return false
}

// ---- globs ----

type globKind uint8

const (
	globLiteral  globKind = iota // equal
	globAny                      // * alone: anything
	globPattern                  // path.Match
	globPrefix                   // abc*: the fast path of a common pattern
	globSuffix                   // *abc
	globContains                 // *abc*
)

// simpleGlob classifies a pattern whose only wildcards are a leading and/or
// trailing *, which match without path.Match; fix is the fixed part.
func simpleGlob(s string) (kind globKind, fix string, ok bool) {
	if len(s) < 2 {
		return 0, "", false
	}
	lead, trail := s[0] == '*', s[len(s)-1] == '*'
	fix = s
	if lead {
		fix = fix[1:]
	}
	if trail && fix != "" {
		fix = fix[:len(fix)-1]
	}
	if fix == "" || strings.ContainsAny(fix, `*?[\`) {
		return 0, "", false
	}
	switch {
	case lead && trail:
		return globContains, fix, true
	case lead:
		return globSuffix, fix, true
	case trail:
		return globPrefix, fix, true
	}
	return 0, "", false
}

// matchGlob matches s against a pattern of kind (with fix, its fixed part,
// for the simple kinds).
func matchGlob(kind globKind, pattern, fix, s string) bool {
	switch kind {
	case globLiteral:
		return s == pattern
	case globAny:
		return true
	case globPrefix:
		return strings.HasPrefix(s, fix)
	case globSuffix:
		return strings.HasSuffix(s, fix)
	case globContains:
		return strings.Contains(s, fix)
	default:
		ok, _ := path.Match(pattern, s)
		return ok
	}
}

// nameGlob matches a tenant or an environment variable name: a literal, *
// for anything, or a path.Match pattern (*, ?, [a-z], \ escapes).
type nameGlob struct {
	pattern string
	fix     string // for the simple kinds
	kind    globKind
}

func compileNameGlob(s string) (nameGlob, error) {
	switch {
	case s == "*":
		return nameGlob{pattern: s, kind: globAny}, nil
	case !strings.ContainsAny(s, `*?[\`):
		return nameGlob{pattern: s, kind: globLiteral}, nil
	}
	if _, err := path.Match(s, ""); err != nil {
		return nameGlob{}, fmt.Errorf("bad glob %q: %v", s, err)
	}
	if kind, fix, ok := simpleGlob(s); ok {
		return nameGlob{pattern: s, fix: fix, kind: kind}, nil
	}
	return nameGlob{pattern: s, kind: globPattern}, nil
}

func (g *nameGlob) match(s string) bool { return matchGlob(g.kind, g.pattern, g.fix, s) }

// topicGlob matches a topic as NATS matches a subject: tokens separated by
// dots, * for exactly one token, > (last) for one or more tokens. A token
// may also be a path.Match pattern (job.gpu-*), matching within that token.
type topicGlob struct {
	pattern string
	literal bool
	tokens  []string
	kinds   []globKind // per token; globAny for *, and for > (the last one)
	fixes   []string   // per token, for the simple kinds
	rest    bool       // the last token is >
}

func compileTopicGlob(s string) (topicGlob, error) {
	g := topicGlob{pattern: s}
	if strings.ContainsAny(s, " \t\r\n") {
		return topicGlob{}, fmt.Errorf("bad topic glob %q: white space", s)
	}
	g.tokens = strings.Split(s, ".")
	if !strings.ContainsAny(s, `*?[\>`) {
		for _, tok := range g.tokens {
			if tok == "" {
				return topicGlob{}, fmt.Errorf("bad topic %q: empty token (two dots, or a dot at an end)", s)
			}
		}
		return topicGlob{pattern: s, literal: true}, nil
	}
	g.kinds = make([]globKind, len(g.tokens))
	g.fixes = make([]string, len(g.tokens))
	for i, tok := range g.tokens {
		switch {
		case tok == "":
			return topicGlob{}, fmt.Errorf("bad topic glob %q: empty token (two dots, or a dot at an end)", s)
		case tok == ">":
			if i != len(g.tokens)-1 {
				return topicGlob{}, fmt.Errorf("bad topic glob %q: > must be the last token", s)
			}
			g.rest = true
			g.kinds[i] = globAny
		case tok == "*":
			g.kinds[i] = globAny
		case strings.Contains(tok, ">"):
			return topicGlob{}, fmt.Errorf("bad topic glob %q: > must be a whole token", s)
		case strings.ContainsAny(tok, `*?[\`):
			if _, err := path.Match(tok, ""); err != nil {
				return topicGlob{}, fmt.Errorf("bad topic glob %q: token %q: %v", s, tok, err)
			}
			g.kinds[i] = globPattern
			if kind, fix, ok := simpleGlob(tok); ok {
				g.kinds[i], g.fixes[i] = kind, fix
			}
		default:
			g.kinds[i] = globLiteral
		}
	}
	return g, nil
}

func (g *topicGlob) match(s string) bool {
	if g.literal {
		return s == g.pattern
	}
	pos, n := 0, len(s)
	for i, tok := range g.tokens {
		if pos > n {
			return false // the topic has fewer tokens
		}
		if g.rest && i == len(g.tokens)-1 {
			return pos < n // > needs at least one more token
		}
		var t string
		if j := strings.IndexByte(s[pos:], '.'); j >= 0 {
			t, pos = s[pos:pos+j], pos+j+1
		} else {
			t, pos = s[pos:], n+1
		}
		if t == "" || !matchGlob(g.kinds[i], tok, g.fixes[i], t) {
			return false
		}
	}
	return pos == n+1 // every token of the topic was matched
}

// ---- throttles ----

// DefaultThrottleKeys bounds the buckets of one throttle rule (one per
// tenant, topic or tenant and topic) unless the rule sets max_keys.
const DefaultThrottleKeys = 10000

type throttleBy uint8

const (
	byTenant throttleBy = iota
	byTopic
	byTenantTopic
)

func (b throttleBy) String() string {
	switch b {
	case byTopic:
		return "topic"
	case byTenantTopic:
		return "tenant_topic"
	default:
		return "tenant"
	}
}

// throttleSpec is a throttle rule's token bucket: rate jobs per per, at most
// burst at once, one bucket per key.
type throttleSpec struct {
	rate    int
	per     time.Duration
	burst   int
	by      throttleBy
	maxKeys int
}

// errNotBool is a when expression of another type than bool.
var errNotBool = errors.New("must be a true/false expression")

package placement

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of a Config.
const (
	// DefaultStrategy places jobs of pools that name no strategy.
	DefaultStrategy = StrategyLeastLoaded
	// DefaultAgingStep: a queued job counts one priority level higher per
	// step it has waited.
	DefaultAgingStep = 30 * time.Second
	// DefaultMaxPending bounds the pending jobs of a pool that sets no bound,
	// implicit pools included.
	DefaultMaxPending = 10_000
	// DefaultMaxPendingTotal bounds the pending jobs of all pools together.
	DefaultMaxPendingTotal = 100_000
	// DefaultTenantName is the tenant of jobs that name none.
	DefaultTenantName = "default"
)

// Config is the placement section of the scheduler's configuration:
//
//	default_strategy: least-loaded
//	aging_step: 30s       # or no_aging: true (strict priority)
//	max_pending_total: 100000
//	pools:
//	  - name: gpu
//	    topics: ["job.llm.>"]
//	    strategy: least-loaded
//	    capabilities: [gpu]
//	    labels: {region: eu}
//	    max_pending: 1000
//	    tenant_max_pending: 100
//	tenants:
//	  - name: acme
//	    weight: 2
//	    max_concurrent: 10
//	    max_pending: 1000
//	default_tenant: {weight: 1}
//
// Zero values take the defaults above.
type Config struct {
	// Pools in order: a job belongs to the first whose topics match its own.
	// A topic no pool matches forms an implicit pool of its own, named after
	// the topic, placed with DefaultStrategy and bounded by DefaultMaxPending.
	Pools []Pool `yaml:"pools"`
	// Tenants with their own weight and limits.
	Tenants []Tenant `yaml:"tenants"`
	// DefaultTenant applies to tenants not listed (its Name is ignored).
	// Default: weight 1, no limits.
	DefaultTenant Tenant `yaml:"default_tenant"`
	// DefaultStrategy places the jobs of pools that name no strategy, and of
	// implicit pools. Default "least-loaded".
	DefaultStrategy string `yaml:"default_strategy"`
	// AgingStep: a queued job's priority rises one level per AgingStep it
	// has waited, so BATCH work is never starved. Default 30s.
	AgingStep time.Duration `yaml:"aging_step"`
	// NoAging turns aging off: a queued job keeps its priority however long
	// it waits, so lower-priority work waits as long as higher-priority work
	// keeps coming (strict priority). It excludes aging_step. Default false.
	NoAging bool `yaml:"no_aging"`
	// DefaultMaxPending bounds each pool that sets no max_pending. Default 10000.
	DefaultMaxPending int `yaml:"default_max_pending"`
	// MaxPendingTotal bounds the pending jobs of every pool together, so that
	// a flood over many topics stays bounded too. Default 100000.
	MaxPendingTotal int `yaml:"max_pending_total"`
}

// Pool is a set of topics placed alike: by one strategy, on workers that
// have its capabilities and labels, with one bound on its pending jobs.
type Pool struct {
	// Name: letters, digits, '-' and '_' (no dots: an implicit pool is named
	// after its topic, which has some).
	Name string `yaml:"name"`
	// Topics are NATS subject patterns: "*" matches one token, a final ">"
	// the rest ("job.llm.>").
	Topics []string `yaml:"topics"`
	// Strategy names the strategy (RegisterStrategy); "" is the config's
	// default strategy.
	Strategy string `yaml:"strategy"`
	// Capabilities every worker of the pool must report.
	Capabilities []string `yaml:"capabilities"`
	// Labels every worker of the pool must carry with these values.
	Labels map[string]string `yaml:"labels"`
	// MaxPending bounds the pool's queued jobs; 0 is the config's default.
	MaxPending int `yaml:"max_pending"`
	// TenantMaxPending bounds the queued jobs of each tenant in this pool;
	// 0 is no bound beyond MaxPending.
	TenantMaxPending int `yaml:"tenant_max_pending"`

	strategy Strategy // resolved by NewPools
	index    int      // in Pools.list; -1 for an implicit pool
	labelKey []string // Labels' keys, sorted: deterministic reasons
}

// Implicit reports whether the pool was made for a topic no configured pool
// matches.
func (p *Pool) Implicit() bool { return p.index < 0 }

// Placer returns the pool's strategy, resolved from its Strategy name by
// NewPools (nil for a Pool not made by Pools).
func (p *Pool) Placer() Strategy { return p.strategy }

// Tenant configures one tenant's share and limits.
type Tenant struct {
	Name string `yaml:"name"`
	// Weight is the tenant's share of a saturated pool relative to the
	// other tenants with queued jobs there. Default 1.
	Weight int `yaml:"weight"`
	// MaxConcurrent bounds the tenant's jobs placed and not yet finished,
	// over every pool; 0 is unlimited.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxPending bounds the tenant's queued jobs over every pool; 0 is no
	// bound beyond the pools' own.
	MaxPending int `yaml:"max_pending"`
}

// ParseConfig reads a Config from YAML; unknown fields are errors. It does
// not validate: NewPools does.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("placement config: %w", err)
	}
	return c, nil
}

var poolName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate reports every problem of the config at once, one per line.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.DefaultStrategy != "" {
		if _, ok := lookupStrategy(c.DefaultStrategy); !ok {
			add("default_strategy %q: unknown strategy (known: %s)", c.DefaultStrategy, strings.Join(StrategyNames(), ", "))
		}
	}
	if c.AgingStep < 0 {
		add("aging_step %s: must not be negative", c.AgingStep)
	}
	if c.NoAging && c.AgingStep != 0 {
		add("aging_step %s with no_aging: set one or the other", c.AgingStep)
	}
	if c.DefaultMaxPending < 0 {
		add("default_max_pending %d: must not be negative", c.DefaultMaxPending)
	}
	if c.MaxPendingTotal < 0 {
		add("max_pending_total %d: must not be negative", c.MaxPendingTotal)
	}
	seen := map[string]bool{}
	for i, p := range c.Pools {
		where := fmt.Sprintf("pools[%d]", i)
		if p.Name != "" {
			where = fmt.Sprintf("pool %q", p.Name)
		}
		switch {
		case p.Name == "":
			add("%s: name is required", where)
		case !poolName.MatchString(p.Name):
			add("%s: name may hold only letters, digits, '-' and '_'", where)
		case seen[p.Name]:
			add("%s: defined twice", where)
		}
		seen[p.Name] = true
		if len(p.Topics) == 0 {
			add("%s: topics: at least one is required", where)
		}
		for _, t := range p.Topics {
			if err := validPattern(t); err != nil {
				add("%s: topics: %v", where, err)
			}
		}
		if p.Strategy != "" {
			if _, ok := lookupStrategy(p.Strategy); !ok {
				add("%s: strategy %q: unknown (known: %s)", where, p.Strategy, strings.Join(StrategyNames(), ", "))
			}
		}
		for _, cp := range p.Capabilities {
			if strings.TrimSpace(cp) == "" {
				add("%s: capabilities: an empty capability", where)
			}
		}
		for k := range p.Labels {
			if strings.TrimSpace(k) == "" {
				add("%s: labels: an empty key", where)
			}
		}
		if p.MaxPending < 0 {
			add("%s: max_pending %d: must not be negative", where, p.MaxPending)
		}
		if p.TenantMaxPending < 0 {
			add("%s: tenant_max_pending %d: must not be negative", where, p.TenantMaxPending)
		}
	}
	seen = map[string]bool{}
	check := func(where string, t Tenant) {
		if t.Weight < 0 {
			add("%s: weight %d: must not be negative (0 is the default, 1)", where, t.Weight)
		}
		if t.MaxConcurrent < 0 {
			add("%s: max_concurrent %d: must not be negative (0 is unlimited)", where, t.MaxConcurrent)
		}
		if t.MaxPending < 0 {
			add("%s: max_pending %d: must not be negative (0 is unlimited)", where, t.MaxPending)
		}
	}
	for i, t := range c.Tenants {
		where := fmt.Sprintf("tenants[%d]", i)
		if t.Name != "" {
			where = fmt.Sprintf("tenant %q", t.Name)
		}
		switch {
		case t.Name == "":
			add("%s: name is required", where)
		case seen[t.Name]:
			add("%s: defined twice", where)
		}
		seen[t.Name] = true
		check(where, t)
	}
	check("default_tenant", c.DefaultTenant)
	return errors.Join(errs...)
}

// Pools is a validated Config, with its defaults filled in, that resolves
// topics to pools and tenants to their settings. It is immutable and safe
// for concurrent use.
type Pools struct {
	cfg      Config
	list     []*Pool
	tenants  map[string]*Tenant
	defTen   Tenant
	strategy Strategy // the default strategy

	// The implicit pools made so far, up to maxImplicitPools: Resolve runs
	// several times per job and should not allocate.
	implicitMu sync.RWMutex
	implicits  map[string]*Pool
}

// maxImplicitPools bounds the implicit pools kept; past it, each Resolve of
// another topic makes a new one.
const maxImplicitPools = 4096

// NewPools validates cfg and returns its pools. cfg is copied.
func NewPools(cfg Config) (*Pools, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("placement config: %w", err)
	}
	if cfg.DefaultStrategy == "" {
		cfg.DefaultStrategy = DefaultStrategy
	}
	if cfg.AgingStep == 0 && !cfg.NoAging {
		cfg.AgingStep = DefaultAgingStep
	}
	if cfg.DefaultMaxPending == 0 {
		cfg.DefaultMaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingTotal == 0 {
		cfg.MaxPendingTotal = DefaultMaxPendingTotal
	}
	ps := &Pools{tenants: make(map[string]*Tenant, len(cfg.Tenants))}
	ps.strategy, _ = lookupStrategy(cfg.DefaultStrategy)
	for i := range cfg.Pools {
		p := cfg.Pools[i] // a copy
		p.Topics = slices.Clone(p.Topics)
		p.Capabilities = slices.Clone(p.Capabilities)
		p.Labels = maps.Clone(p.Labels)
		if p.Strategy == "" {
			p.Strategy = cfg.DefaultStrategy
		}
		if p.MaxPending == 0 {
			p.MaxPending = cfg.DefaultMaxPending
		}
		p.strategy, _ = lookupStrategy(p.Strategy)
		p.index = i
		p.labelKey = sortedKeys(p.Labels)
		ps.list = append(ps.list, &p)
	}
	ps.cfg = cfg
	ps.cfg.Pools = make([]Pool, len(ps.list))
	for i, p := range ps.list {
		ps.cfg.Pools[i] = *p
	}
	ps.cfg.Tenants = slices.Clone(cfg.Tenants)
	ps.defTen = withTenantDefaults(cfg.DefaultTenant)
	for _, t := range cfg.Tenants {
		t = withTenantDefaults(t)
		ps.tenants[t.Name] = &t
	}
	return ps, nil
}

func withTenantDefaults(t Tenant) Tenant {
	if t.Weight == 0 {
		t.Weight = 1
	}
	return t
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Config returns the config with its defaults filled in.
func (ps *Pools) Config() Config { return ps.cfg }

// List returns the configured pools, in order. Do not modify them.
func (ps *Pools) List() []*Pool { return ps.list }

// Pool returns the configured pool of that name.
func (ps *Pools) Pool(name string) (*Pool, bool) {
	for _, p := range ps.list {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// Resolve returns the pool of a topic: the first configured pool with a
// pattern matching it, else a new implicit pool named after the topic. It
// allocates only for an implicit pool.
func (ps *Pools) Resolve(topic string) *Pool {
	for _, p := range ps.list {
		for _, pat := range p.Topics {
			if MatchSubject(pat, topic) {
				return p
			}
		}
	}
	return ps.implicit(topic)
}

func (ps *Pools) implicit(topic string) *Pool {
	ps.implicitMu.RLock()
	p := ps.implicits[topic]
	ps.implicitMu.RUnlock()
	if p != nil {
		return p
	}
	topic = strings.Clone(topic) // kept: not a slice of a bigger message
	p = &Pool{
		Name: topic, Topics: []string{topic}, Strategy: ps.cfg.DefaultStrategy,
		MaxPending: ps.cfg.DefaultMaxPending, strategy: ps.strategy, index: -1,
	}
	ps.implicitMu.Lock()
	defer ps.implicitMu.Unlock()
	if q := ps.implicits[topic]; q != nil {
		return q
	}
	if ps.implicits == nil {
		ps.implicits = make(map[string]*Pool)
	}
	if len(ps.implicits) < maxImplicitPools {
		ps.implicits[topic] = p
	}
	return p
}

// Tenant returns a tenant's settings: its own, or the default tenant's.
func (ps *Pools) Tenant(name string) Tenant {
	if t, ok := ps.tenants[name]; ok {
		return *t
	}
	t := ps.defTen
	t.Name = name
	return t
}

// AgingStep is the config's aging step: 0 with no_aging (aging off).
func (ps *Pools) AgingStep() time.Duration { return ps.cfg.AgingStep }

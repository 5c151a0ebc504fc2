package safety

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// DefaultWatchInterval is how often Watch looks at the policy file.
const DefaultWatchInterval = 500 * time.Millisecond

// Config configures a Kernel. The zero value is valid: the shipped default
// policy, logging to slog.Default(), no audit hook.
type Config struct {
	// Policy is the policy to start with. Set Policy or PolicyFile, not both;
	// with neither, the kernel starts with DefaultPolicy().
	Policy *Policy
	// PolicyFile is a policy file to start with; New fails if it does not
	// validate. Reload reads it again; Watch(ctx, "") watches it.
	PolicyFile string
	// Logger receives the safety lines (component=safety): denials and throttles at info,
	// admissions at debug, policy loads and refusals. Default slog.Default().
	Logger *slog.Logger
	// Audit, if set, receives the record of every decision, synchronously,
	// from Check: it must not block (BusAuditor.Record does not). The record
	// is the callee's.
	Audit func(*pb.SafetyVerdict)
	// Auditor, if set, is told every decision, synchronously, from Check,
	// as Audit is, without a record built for it: BusAuditor.Decided keeps
	// the fields by value, where a record per decision was an allocation
	// per job. It must not block. Audit and Auditor may both be set.
	Auditor DecisionAuditor
	// InstanceID names this kernel in audit records (decided_by): the
	// scheduler's id, or the safety service's. Default safety-<host>-<pid>.
	InstanceID string
	// WatchInterval is how often Watch reads the policy file. Default
	// DefaultWatchInterval.
	WatchInterval time.Duration
	// SettleTime is how long a changed policy file must keep the same
	// content before Watch loads it: it is read the same at two looks at
	// least this far apart. Default DefaultSettleTime.
	SettleTime time.Duration
}

// DefaultSettleTime is how long a changed policy file must stay the same
// before Watch loads it.
const DefaultSettleTime = time.Second

func (c *Config) setDefaults() error {
	if c.Policy != nil && c.PolicyFile != "" {
		return errors.New("safety: set Config.Policy or Config.PolicyFile, not both")
	}
	if c.WatchInterval < 0 {
		return fmt.Errorf("safety: Config.WatchInterval %s is negative", c.WatchInterval)
	}
	if c.WatchInterval == 0 {
		c.WatchInterval = DefaultWatchInterval
	}
	if c.SettleTime < 0 {
		return fmt.Errorf("safety: Config.SettleTime %s is negative", c.SettleTime)
	}
	if c.SettleTime == 0 {
		c.SettleTime = DefaultSettleTime
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		c.InstanceID = "safety-" + host + "-" + strconv.Itoa(os.Getpid())
	}
	return nil
}

// Kernel decides about jobs by its current policy. Check is safe for
// concurrent use, and so is replacing the policy (Load, Reload, Watch,
// Install) while checks run: each check sees one policy, whole.
type Kernel struct {
	cfg Config
	log *slog.Logger

	active atomic.Pointer[active]

	loadMu   sync.Mutex // serializes loads; guards the fields below
	path     string     // the file the current policy came from
	lastHash [32]byte   // the content last tried (loaded or refused) from path
	tried    bool       // lastHash is set
	problem  string     // Watch: why the file could not be read at the last look ("": it could)
	pending  *settling  // Watch: a changed content waiting to settle
	now      func() time.Time

	checks, allowed, denied, throttled, celErrors atomic.Uint64
	onErrorVerdicts                               atomic.Uint64
	loads, refused, watchErrors, changes          atomic.Uint64
}

// active is an installed policy and the state that goes with it: the
// throttle buckets, and the log limiters of its rules.
type active struct {
	p        *Policy
	buckets  []*buckets // by rule index; nil for all but throttle rules
	rules    []ruleState
	loadedAt time.Time
	file     string
}

type ruleState struct {
	celErrLogged atomic.Bool
	lastLogNs    atomic.Int64  // the last throttle logged at info
	suppressed   atomic.Uint64 // throttles logged at debug since
}

// New returns a kernel with cfg's policy installed.
func New(cfg Config) (*Kernel, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	k := &Kernel{cfg: cfg, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentSafety), now: time.Now}
	switch {
	case cfg.Policy != nil:
		k.install(cfg.Policy, "")
	case cfg.PolicyFile != "":
		if err := k.Load(cfg.PolicyFile); err != nil {
			return nil, err
		}
	default:
		p, err := defaultPolicy()
		if err != nil {
			return nil, err
		}
		k.install(p, "")
	}
	return k, nil
}

// Policy returns the policy in force.
func (k *Kernel) Policy() *Policy { return k.active.Load().p }

// InstanceID is the kernel's name in audit records.
func (k *Kernel) InstanceID() string { return k.cfg.InstanceID }

// Check decides about req by the policy in force. It never fails: the error
// is there to satisfy the scheduler's SafetyChecker, which a remote kernel
// can fail. It reports the decision to the audit hook and the log.
func (k *Kernel) Check(ctx context.Context, req *pb.JobRequest) (Verdict, error) {
	a := k.active.Load()
	var now time.Time // what needs the time: throttles, audit records
	if a.p.hasThrottle || k.cfg.Audit != nil || k.cfg.Auditor != nil {
		now = time.Now()
	}
	return k.check(ctx, a, req, TraceID(ctx), now), nil
}

// CheckTraced is Check with the job's trace id and the time of the decision
// given as arguments, as the scheduler has them when it admits a job: no
// context is built to carry the trace id and the clock is not read again,
// for every job. The verdict, the audit record and the log line are those
// Check makes with ctx carrying traceID (WithTraceID) at now.
func (k *Kernel) CheckTraced(ctx context.Context, req *pb.JobRequest, traceID string, now time.Time) (Verdict, error) {
	return k.check(ctx, k.active.Load(), req, traceID, now), nil
}

func (k *Kernel) check(ctx context.Context, a *active, req *pb.JobRequest, traceID string, now time.Time) Verdict {
	v, rule := k.decide(a, req, now)
	k.checks.Add(1)
	switch v.Decision {
	case Allow:
		k.allowed.Add(1)
	case Deny:
		k.denied.Add(1)
	case Throttle:
		k.throttled.Add(1)
	}
	k.report(ctx, a, rule, req, v, traceID, now)
	return v
}

// decide runs the rules of a over req: the first that matches and decides
// makes the verdict; rule is its index, -1 for the default.
func (k *Kernel) decide(a *active, req *pb.JobRequest, now time.Time) (v Verdict, rule int) {
	p := a.p
	var act *celActivation // built for the first rule with a when expression
	for i, r := range p.rules {
		if !r.matchFields(req) {
			continue
		}
		if r.when != nil {
			if act == nil {
				act = &celActivation{req: req}
			}
			ok, err := evalWhen(r, act)
			if err != nil {
				k.celErrors.Add(1)
				if a.rules[i].celErrLogged.CompareAndSwap(false, true) {
					k.log.Warn("a when expression failed to evaluate; the rule's on_error decides (logged once per rule and policy load)",
						"rule_id", r.id, "when", r.whenSrc, "on_error", r.onError.String(), "job_id", req.GetJobId(), "err", err, "policy_version", p.Version)
				}
				if r.onError == onErrorSkip {
					continue
				}
				k.onErrorVerdicts.Add(1)
				return onErrorVerdict(r, err, p.Version), i
			}
			if !ok {
				continue
			}
		}
		if r.decision == Throttle {
			b := a.buckets[i]
			ok, retry := b.take(b.key(req), now)
			if ok {
				continue // within the rate: this rule does not decide
			}
			return Verdict{Decision: Throttle, Reason: r.reason, RuleID: r.id, PolicyVersion: p.Version, RetryAfter: retry}, i
		}
		return Verdict{Decision: r.decision, Reason: r.reason, RuleID: r.id, PolicyVersion: p.Version}, i
	}
	return Verdict{Decision: p.Default, Reason: p.DefaultReason, PolicyVersion: p.Version}, -1
}

// onErrorVerdict is the verdict of rule r whose when expression failed with
// err, by its on_error (deny or throttle). The reason says that evaluation
// failed and how, by kind only: the expression and the error text (which may
// quote the policy) go to the log, not to the client.
func onErrorVerdict(r *rule, err error, version string) Verdict {
	why := "the rule's condition could not be evaluated (" + evalErrorKind(err) + "; on_error: " + r.onError.String() + ")"
	if r.reason != "" {
		why = r.reason + ": " + why
	}
	v := Verdict{Decision: Deny, Reason: why, RuleID: r.id, PolicyVersion: version}
	if r.onError == onErrorThrottle {
		v.Decision = Throttle
		v.RetryAfter = time.Second // a rule without a rate (a parse error elsewhere) still says when
		if t := r.throttle; t != nil && t.rate > 0 {
			v.RetryAfter = max(time.Millisecond, t.per/time.Duration(t.rate))
		}
	}
	return v
}

// evalErrorKind names the kind of an evaluation error for a verdict's reason.
func evalErrorKind(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "cost limit exceeded"):
		return "cost limit exceeded"
	case strings.Contains(msg, errOutOfRange.Error()):
		return "a field has a value this version does not know"
	default:
		return "evaluation error"
	}
}

// throttleLogEvery is the most a throttle rule logs at info; the throttles
// between are logged at debug, and counted in the next info line.
const throttleLogEvery = time.Second

// report sends the decision to the audit hook and the log.
// LogsDecisions reports that the kernel logs each decision it makes (a
// denial at info, an admission at debug, throttles at most once per rule
// per interval at info): the scheduler then keeps its own line about a
// denied job at debug.
func (k *Kernel) LogsDecisions() bool { return true }

func (k *Kernel) report(ctx context.Context, a *active, rule int, req *pb.JobRequest, v Verdict, traceID string, now time.Time) {
	if k.cfg.Auditor != nil {
		k.cfg.Auditor.Decided(req, v, k.cfg.InstanceID, now)
	}
	if k.cfg.Audit != nil {
		k.cfg.Audit(Record(req, v, k.cfg.InstanceID, now))
	}
	level := slog.LevelDebug
	var suppressed uint64
	switch v.Decision {
	case Deny:
		level = slog.LevelInfo
	case Throttle:
		if rule >= 0 {
			st := &a.rules[rule]
			last := st.lastLogNs.Load()
			if now.UnixNano()-last >= int64(throttleLogEvery) && st.lastLogNs.CompareAndSwap(last, now.UnixNano()) {
				level = slog.LevelInfo
				suppressed = st.suppressed.Swap(0)
			} else {
				st.suppressed.Add(1)
			}
		}
	}
	if !k.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.String("job_id", req.GetJobId()),
		slog.String("tenant", req.GetTenant()),
		slog.String("topic", req.GetTopic()),
		slog.String("decision", v.Decision.String()),
		slog.String("rule_id", v.RuleID),
		slog.String("reason", v.Reason),
		slog.String("policy_version", v.PolicyVersion))
	if v.Decision == Throttle {
		attrs = append(attrs, slog.Duration("retry_after", v.RetryAfter))
		if suppressed > 0 {
			attrs = append(attrs, slog.Uint64("throttled_since_last_line", suppressed))
		}
	}
	if traceID != "" {
		attrs = append(attrs, slog.String("trace_id", traceID))
	}
	msg := "admitted"
	switch v.Decision {
	case Deny:
		msg = "denied"
	case Throttle:
		msg = "throttled"
	}
	k.log.LogAttrs(ctx, level, msg, attrs...)
}

// ---- loading ----

// Install puts p in force. Throttle rules keep their buckets across a
// reload when a rule of the same id has the same throttle settings. A
// running Watch replaces p when the policy file's content changes next;
// Reload replaces it at once.
func (k *Kernel) Install(p *Policy) error {
	if p == nil {
		return errors.New("safety: Install: nil policy")
	}
	k.loadMu.Lock()
	defer k.loadMu.Unlock()
	k.install(p, "")
	return nil
}

func (k *Kernel) install(p *Policy, file string) {
	a := &active{p: p, buckets: make([]*buckets, len(p.rules)), rules: make([]ruleState, len(p.rules)), loadedAt: time.Now(), file: file}
	old := k.active.Load()
	for i, r := range p.rules {
		if r.throttle == nil {
			continue
		}
		if b := old.bucketsFor(r); b != nil {
			a.buckets[i] = b
		} else {
			a.buckets[i] = newBuckets(*r.throttle)
		}
	}
	k.active.Store(a)
	k.loads.Add(1)
}

// bucketsFor returns the buckets of a's rule with r's id and throttle
// settings, or nil.
func (a *active) bucketsFor(r *rule) *buckets {
	if a == nil {
		return nil
	}
	for i, o := range a.p.rules {
		if o.id == r.id && o.throttle != nil && *o.throttle == *r.throttle {
			return a.buckets[i]
		}
	}
	return nil
}

// Load reads, validates and installs the policy file at path, which
// Reload and Watch then use. A policy that does not validate is refused
// (logged with every error, counted in Stats.Refused) and the one in force
// stays; the error is then a *PolicyError.
func (k *Kernel) Load(path string) error {
	if path == "" {
		return errors.New("safety: Load: no policy file")
	}
	k.loadMu.Lock()
	defer k.loadMu.Unlock()
	data, err := readPolicyFile(path)
	if err != nil {
		k.refuse(path, err)
		return err
	}
	return k.loadLocked(path, data)
}

// Reload loads the policy file again (the one of Config.PolicyFile or the
// last Load).
func (k *Kernel) Reload() error {
	k.loadMu.Lock()
	path := k.path
	k.loadMu.Unlock()
	if path == "" {
		return errors.New("safety: Reload: the policy did not come from a file")
	}
	return k.Load(path)
}

// loadLocked parses data, read from path, and installs it or refuses it.
func (k *Kernel) loadLocked(path string, data []byte) error {
	k.lastHash, k.tried = sha256.Sum256(data), true
	p, err := ParsePolicy(data)
	if err != nil {
		var pe *PolicyError
		if errors.As(err, &pe) {
			pe.File = path
		}
		k.refuse(path, err)
		return err
	}
	prev := k.active.Load()
	k.install(p, path)
	k.path = path
	attrs := []any{"file", path, "version", p.Version, "rules", len(p.rules), "default", p.Default.String()}
	if prev != nil {
		attrs = append(attrs, "previous_version", prev.p.Version)
	}
	k.log.Info("policy loaded", attrs...)
	return nil
}

// refuse logs and counts a policy that was not installed.
func (k *Kernel) refuse(path string, err error) {
	k.refused.Add(1)
	attrs := []any{"file", path}
	var pe *PolicyError
	if errors.As(err, &pe) {
		lines := make([]string, len(pe.Errors))
		for i, fe := range pe.Errors {
			lines[i] = fe.String()
		}
		attrs = append(attrs, "errors", strings.Join(lines, "; "))
	} else {
		attrs = append(attrs, "err", err)
	}
	if a := k.active.Load(); a != nil {
		attrs = append(attrs, "running_version", a.p.Version)
	}
	k.log.Error("policy refused; the running policy stays in force", attrs...)
}

// Watch reloads the policy file at path (the one in force when empty)
// whenever its content changes, until ctx ends, and returns nil then. It
// reads the file every Config.WatchInterval and compares its content with
// the last it tried, so that an editor's write-to-temp-and-rename, a
// touch, or an atomic symlink swap are all seen, and a broken edit is
// refused once, not at every look.
//
// A changed content is loaded only once it has settled: read the same at
// two looks at least Config.SettleTime apart. An in-place write in
// progress (a valid prefix of the new file, weaker than both versions) is
// therefore never loaded, as long as the writer does not pause for
// SettleTime or longer in the middle of it.
//
// Only a regular file is read: a named pipe, a device or a directory at
// the path is refused without blocking (ErrNotRegular). A refused path, a
// missing or unreadable file are each logged once (until the path changes)
// and the policy in force stays.
func (k *Kernel) Watch(ctx context.Context, path string) error {
	if path == "" {
		k.loadMu.Lock()
		path = k.path
		k.loadMu.Unlock()
		if path == "" {
			return errors.New("safety: Watch: no policy file")
		}
	}
	t := time.NewTicker(k.cfg.WatchInterval)
	defer t.Stop()
	for {
		k.poll(path)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// settling is a changed content of the policy file, seen but not yet
// loaded: it is, once a look at least SettleTime after since reads it again.
type settling struct {
	hash  [32]byte
	since time.Time
}

// poll looks at path once: it loads a changed content that has settled.
func (k *Kernel) poll(path string) {
	data, err := readRegular(path)
	k.loadMu.Lock()
	defer k.loadMu.Unlock()
	if err != nil {
		k.pending = nil
		problem := err.Error()
		if problem == k.problem {
			return // logged and counted when it started
		}
		k.problem = problem
		if errors.Is(err, ErrNotRegular) {
			k.refuse(path, &PolicyError{File: path, Errors: []FieldError{{Msg: "cannot read the file: " + pathless(err)}}})
			return
		}
		k.watchErrors.Add(1)
		k.log.Warn("cannot read the policy file; the running policy stays in force", "file", path, "err", pathless(err))
		return
	}
	if k.problem != "" {
		k.problem = ""
		k.log.Info("the policy file is readable again", "file", path)
	}
	hash := sha256.Sum256(data)
	if k.tried && path == k.path && hash == k.lastHash {
		k.pending = nil // back to what was tried last: nothing to do
		return
	}
	now := k.now()
	if k.pending == nil || k.pending.hash != hash {
		// New content: wait for it to settle. A write in progress will
		// have changed it by the next look.
		k.pending = &settling{hash: hash, since: now}
		k.changes.Add(1)
		k.log.Debug("the policy file changed; loading it once it has settled", "file", path, "settle", k.cfg.SettleTime)
		return
	}
	if now.Sub(k.pending.since) < k.cfg.SettleTime {
		return
	}
	k.pending = nil
	if len(data) > MaxPolicyBytes {
		k.lastHash, k.tried = hash, true
		k.refuse(path, &PolicyError{File: path, Errors: []FieldError{{Msg: fmt.Sprintf("larger than %d bytes", MaxPolicyBytes)}}})
		return
	}
	_ = k.loadLocked(path, data)
}

// ---- stats ----

// Stats counts what a kernel did. Counters are cumulative.
type Stats struct {
	Checks, Allowed, Denied, Throttled uint64
	// CELErrors counts when expressions that failed at run time; each time
	// the rule's on_error decided. OnErrorVerdicts counts those of them that
	// made the verdict (on_error deny or throttle; skip makes none).
	CELErrors, OnErrorVerdicts uint64
	// Loads counts policies installed, the first included; Refused counts
	// policies that did not validate (or could not be read) and were not.
	Loads, Refused uint64
	// WatchErrors counts the times Watch found the file missing or
	// unreadable (once per spell). A path that is not a regular file is
	// counted in Refused instead.
	WatchErrors uint64
	// PolicyChanges counts the changed contents Watch saw, each then
	// loaded once it settled, or superseded by another change first.
	PolicyChanges uint64
	// ThrottleEvictions counts throttle buckets dropped to stay within
	// max_keys.
	ThrottleEvictions uint64
	// ThrottleKeys is the number of throttle buckets held.
	ThrottleKeys int
	// PolicyVersion and PolicyFile describe the policy in force (PolicyFile
	// is empty for one not read from a file); PolicyLoaded is when it was
	// installed.
	PolicyVersion string
	PolicyFile    string
	PolicyLoaded  time.Time
}

// Stats returns the kernel's counters.
func (k *Kernel) Stats() Stats {
	a := k.active.Load()
	s := Stats{
		Checks: k.checks.Load(), Allowed: k.allowed.Load(), Denied: k.denied.Load(), Throttled: k.throttled.Load(),
		CELErrors: k.celErrors.Load(), OnErrorVerdicts: k.onErrorVerdicts.Load(), Loads: k.loads.Load(), Refused: k.refused.Load(), WatchErrors: k.watchErrors.Load(), PolicyChanges: k.changes.Load(),
		PolicyVersion: a.p.Version, PolicyFile: a.file, PolicyLoaded: a.loadedAt,
	}
	for _, b := range a.buckets {
		if b != nil {
			s.ThrottleEvictions += b.evictions.Load()
			s.ThrottleKeys += b.len()
		}
	}
	return s
}

// DecisionAuditor is told every decision a Kernel makes (Config.Auditor):
// the request decided about, the verdict, the kernel's instance id and the
// time. BusAuditor is one.
type DecisionAuditor interface {
	Decided(req *pb.JobRequest, v Verdict, decidedBy string, at time.Time)
}

// ---- trace ids ----

type traceKey struct{}

// WithTraceID returns ctx carrying a job's trace id, which the kernel adds
// to its log lines and a Remote sends with the check.
func WithTraceID(ctx context.Context, traceID string) context.Context {
	// One allocation, where context.WithValue takes two (the context and
	// the string boxed in an interface): the scheduler calls this for every
	// job it admits.
	return &traceCtx{Context: ctx, id: traceID}
}

// traceCtx is a context carrying a trace id (WithTraceID).
type traceCtx struct {
	context.Context
	id string
}

func (c *traceCtx) Value(key any) any {
	if _, ok := key.(traceKey); ok {
		return c.id
	}
	return c.Context.Value(key)
}

func (c *traceCtx) String() string { return "safety.WithTraceID(" + c.id + ")" }

// TraceID is the trace id ctx carries, or "".
func TraceID(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	if c, ok := ctx.(*traceCtx); ok {
		return c.id
	}
	id, _ := ctx.Value(traceKey{}).(string)
	return id
}

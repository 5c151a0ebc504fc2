package main

// What the client commands (submit, job, dlq) share: the connection flags,
// error messages a user can act on, and the two ways a job is printed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// defaultRequestTimeout bounds one request to the scheduler.
const defaultRequestTimeout = 5 * time.Second

// clientSenderID signs the packets the command sends.
const clientSenderID = "cortex-cli"

// connFlags are the flags of every client command: where NATS is (the same
// sources as the other binaries: --config, then NATS_URL, then --nats-url)
// and how long one request may take. The credentials (--nats-user, ...) are
// the root command's persistent flags; they reach the command's flags.
type connFlags struct {
	configPath string
	natsURL    string
	timeout    time.Duration
	flags      *pflag.FlagSet // the command's, with the root's credential flags once parsed
}

// register adds the flags to f; the request timeout is named timeoutFlag
// (submit uses --timeout for the job's own timeout).
func (c *connFlags) register(f *pflag.FlagSet, timeoutFlag string) {
	c.flags = f
	f.StringVar(&c.configPath, "config", "", "config file (default config/local.yaml if present)")
	f.StringVar(&c.natsURL, "nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
	f.DurationVar(&c.timeout, timeoutFlag, defaultRequestTimeout, "how long to wait for the scheduler's answer")
}

// session is a client and its connection to NATS.
type session struct {
	url     string
	timeout time.Duration
	client  *client.Client
}

// open loads the config and connects.
func (c *connFlags) open() (*session, error) {
	if c.timeout <= 0 {
		return nil, errors.New("the request timeout must be positive")
	}
	cfg, err := system.LoadConfig(c.configPath, c.natsURL, "")
	if err != nil {
		return nil, oneLine(err)
	}
	if err := config.ApplyCredentialFlags(c.flags, cfg); err != nil {
		return nil, oneLine(err)
	}
	identity, err := clientIdentity(c.flags, &cfg.NATS)
	if err != nil {
		return nil, err
	}
	natsOpts, err := system.NatsOptions(c.flags, cfg)
	if err != nil {
		return nil, oneLine(err)
	}
	// Connection trouble is worth a line on stderr; per-job chatter is not.
	log := logging.New(os.Stderr, max(system.Level(cfg), slog.LevelWarn))
	cl, err := client.Connect(cfg.NatsURL, client.Options{
		Name: "cortex-cli", SenderID: clientSenderID, Identity: identity, RequestTimeout: c.timeout, Logger: log, NATSOptions: natsOpts,
	})
	if err != nil {
		cause := errors.Unwrap(err)
		if cause == nil {
			cause = err
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			return nil, fmt.Errorf("NATS at %s refused the credentials (%s): %v", cfg.NatsURL, cfg.NATS.Describe(), cause)
		}
		return nil, fmt.Errorf("cannot reach NATS at %s: %v", cfg.NatsURL, cause)
	}
	return &session{url: cfg.NatsURL, timeout: c.timeout, client: cl}, nil
}

// Client identity: how the command names itself to the scheduler
// (docs/security.md). --identity, else CORTEX_IDENTITY, else the token of
// the connection's inbox prefix _INBOX.<user> (the NATS user's name, or
// --nats-inbox-prefix). None: the bare subjects, for a server without
// credentials.
const (
	identityFlag = "identity"
	envIdentity  = "CORTEX_IDENTITY"
)

// registerIdentityFlag adds --identity to f (the root's persistent flags).
func registerIdentityFlag(f *pflag.FlagSet) {
	f.String(identityFlag, "", "client identity the scheduler knows this client by (overrides "+envIdentity+
		"; default: the NATS user); answers come under _INBOX.<identity> (docs/security.md)")
}

// clientIdentity returns the client identity, and sets the inbox prefix
// it implies when none is set: the scheduler answers identity U only
// under _INBOX.U.
func clientIdentity(f *pflag.FlagSet, creds *bus.Credentials) (string, error) {
	identity := os.Getenv(envIdentity)
	if fl := f.Lookup(identityFlag); fl != nil && fl.Changed {
		identity = fl.Value.String()
	}
	if identity == "" {
		// _INBOX.<user>, or the prefix given: its one token names us.
		owner, ok := strings.CutPrefix(creds.Inbox(), wire.InboxRoot+".")
		if !ok || tenancy.ValidIdentity(owner) != nil {
			return "", nil
		}
		return owner, nil
	}
	if err := tenancy.ValidIdentity(identity); err != nil {
		return "", fmt.Errorf("--identity (%s) %q: %v", envIdentity, identity, err)
	}
	want := wire.ClientInbox(identity)
	switch creds.InboxPrefix {
	case "":
		creds.InboxPrefix = want
	case want:
	default:
		return "", fmt.Errorf("--identity %s needs the inbox prefix %s (the scheduler answers %s nowhere else), but --nats-inbox-prefix (NATS_INBOX_PREFIX) is %s",
			identity, want, identity, creds.InboxPrefix)
	}
	return identity, nil
}

func (s *session) close() { s.client.Close() }

// oneLine joins the lines of err (a YAML error lists one per problem).
func oneLine(err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return errors.New(strings.Join(lines, " "))
}

// request is the context of one request: the command's context and the
// request timeout.
func (s *session) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// explain turns a client error into one line a user can act on.
func (s *session) explain(err error) error {
	var refused *client.RefusedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		return errors.New(refused.Reason)
	case errors.Is(err, client.ErrNoScheduler):
		return fmt.Errorf("no scheduler is answering on %s (is cortex-scheduler or cortex dev running?)", s.url)
	case errors.Is(err, context.DeadlineExceeded):
		if s.refusedByServer() {
			// The server dropped what we sent, or the answer's subscription.
			return fmt.Errorf("NATS at %s refused it: %v (what this user may do: docs/security.md)", s.url, s.client.Conn().LastError())
		}
		return fmt.Errorf("no answer from a scheduler on %s within %s", s.url, s.timeout)
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	}
	return err
}

// refusedByServer reports whether the server refused something this
// connection sent or subscribed to (a permission violation).
func (s *session) refusedByServer() bool {
	return errors.Is(s.client.Conn().LastError(), nats.ErrPermissionViolation)
}

// signalContext is cmd's context, ended by SIGINT or SIGTERM.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
}

// ---- printing jobs ----

// timeLayout is RFC 3339 with milliseconds, in UTC.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// jobView is a job as the command prints it: the JSON of `job get --json`,
// and the fields of the human output, in this order.
type jobView struct {
	JobID          string            `json:"job_id"`
	State          string            `json:"state"`
	Attempts       int32             `json:"attempts"`
	MaxAttempts    int32             `json:"max_attempts"`
	FailedAttempts int32             `json:"failed_attempts"`
	WorkerID       string            `json:"worker_id"`
	ResultPtr      string            `json:"result_ptr"`
	Error          string            `json:"error"`
	PendingReason  string            `json:"pending_reason"`
	Topic          string            `json:"topic"`
	Priority       string            `json:"priority"`
	ContextPtr     string            `json:"context_ptr,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	TraceID        string            `json:"trace_id"`
	Created        string            `json:"created"`
	Updated        string            `json:"updated"`
	AttemptStarted string            `json:"attempt_started,omitempty"`
	NextAttempt    string            `json:"next_attempt,omitempty"`
	Deadline       string            `json:"deadline,omitempty"`
	ExecutionMs    int64             `json:"execution_ms"`
	DeadLetter     bool              `json:"dead_letter"`
	Tenant         string            `json:"tenant,omitempty"`
	Pool           string            `json:"pool,omitempty"`
	RuleID         string            `json:"rule_id,omitempty"`
	PolicyVersion  string            `json:"policy_version,omitempty"`
}

func viewOf(j *pb.JobInfo) jobView {
	req := j.GetRequest()
	return jobView{
		JobID:          j.GetJobId(),
		State:          client.StateName(j.GetState()),
		Attempts:       j.GetAttempt(),
		MaxAttempts:    j.GetMaxAttempts(),
		FailedAttempts: j.GetFailedAttempts(),
		WorkerID:       j.GetWorkerId(),
		ResultPtr:      j.GetResultPtr(),
		Error:          j.GetError(),
		PendingReason:  j.GetPendingReason(),
		Topic:          req.GetTopic(),
		Priority:       priorityName(req.GetPriority()),
		ContextPtr:     req.GetContextPtr(),
		Env:            req.GetEnvVars(),
		TraceID:        j.GetTraceId(),
		Created:        formatMs(j.GetCreatedMs()),
		Updated:        formatMs(j.GetUpdatedMs()),
		AttemptStarted: formatMs(j.GetAttemptStartedMs()),
		NextAttempt:    formatMs(j.GetNextAttemptMs()),
		Deadline:       formatMs(j.GetDeadlineMs()),
		ExecutionMs:    j.GetExecutionMs(),
		DeadLetter:     j.GetDeadLetter(),
		Tenant:         req.GetTenant(),
		Pool:           j.GetPool(),
		RuleID:         j.GetRuleId(),
		PolicyVersion:  j.GetPolicyVersion(),
	}
}

func formatMs(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(timeLayout)
}

func priorityName(p pb.JobPriority) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "JOB_PRIORITY_"))
}

// parsePriority reads batch, interactive or critical (or the wire names).
func parsePriority(s string) (pb.JobPriority, error) {
	name := "JOB_PRIORITY_" + strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s), "JOB_PRIORITY_"))
	if v, ok := pb.JobPriority_value[name]; ok && v != int32(pb.JobPriority_JOB_PRIORITY_UNSPECIFIED) {
		return pb.JobPriority(v), nil
	}
	return 0, fmt.Errorf("priority %q: want batch, interactive or critical", s)
}

// parseState reads a state name in any case: pending, RUNNING, ...
func parseState(s string) (pb.JobState, error) {
	return client.ParseState(s)
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJobs writes jobs as one JSON array (never null).
func writeJobsJSON(w io.Writer, jobs []*pb.JobInfo) error {
	views := make([]jobView, 0, len(jobs))
	for _, j := range jobs {
		views = append(views, viewOf(j))
	}
	return writeJSON(w, views)
}

// writeJob writes one job as "key: value" lines.
func writeJob(w io.Writer, j *pb.JobInfo) error {
	v := viewOf(j)
	env := make([]string, 0, len(v.Env))
	for k, val := range v.Env {
		env = append(env, k+"="+val)
	}
	sort.Strings(env)
	rows := [][2]string{
		{"job_id", v.JobID},
		{"state", v.State},
		{"attempts", strconv.Itoa(int(v.Attempts))},
		{"max_attempts", strconv.Itoa(int(v.MaxAttempts))},
		{"failed_attempts", strconv.Itoa(int(v.FailedAttempts))},
		{"worker_id", v.WorkerID},
		{"result_ptr", v.ResultPtr},
		{"error", v.Error},
		{"pending_reason", v.PendingReason},
		{"rule_id", v.RuleID},
		{"policy_version", v.PolicyVersion},
		{"topic", v.Topic},
		{"tenant", v.Tenant},
		{"pool", v.Pool},
		{"priority", v.Priority},
		{"context_ptr", v.ContextPtr},
		{"env", strings.Join(env, " ")},
		{"trace_id", v.TraceID},
		{"created", v.Created},
		{"updated", v.Updated},
		{"attempt_started", v.AttemptStarted},
		{"next_attempt", v.NextAttempt},
		{"deadline", v.Deadline},
		{"execution_ms", strconv.FormatInt(v.ExecutionMs, 10)},
		{"dead_letter", strconv.FormatBool(v.DeadLetter)},
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, r := range rows {
		val := r[1]
		if val == "" {
			val = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], val)
	}
	return tw.Flush()
}

// writeTable writes jobs as a table, least recently updated first.
func writeTable(w io.Writer, jobs []*pb.JobInfo) error {
	jobs = append([]*pb.JobInfo(nil), jobs...)
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].GetUpdatedMs() < jobs[b].GetUpdatedMs() })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB_ID\tSTATE\tATTEMPTS\tWORKER\tUPDATED\tREASON")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", j.GetJobId(), client.StateName(j.GetState()), j.GetAttempt(),
			orDash(j.GetWorkerId()), orDash(formatMs(j.GetUpdatedMs())), orDash(reason(j)))
	}
	return tw.Flush()
}

// reason is why a job is where it is: while it is active, why it is not
// running yet (its error then is an earlier attempt's); once it ended, its
// error.
func reason(j *pb.JobInfo) string {
	if client.IsActive(j.GetState()) {
		return j.GetPendingReason()
	}
	return j.GetError()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// changeLine is one line of a watch: when the job changed, its state,
// attempt, worker, and why (or where its result is).
func changeLine(j *pb.JobInfo) string {
	at := "-"
	if ms := j.GetUpdatedMs(); ms > 0 {
		at = time.UnixMilli(ms).Format("15:04:05.000")
	}
	why := reason(j)
	if j.GetState() == pb.JobState_JOB_STATE_COMPLETED && j.GetResultPtr() != "" {
		why = "result_ptr=" + j.GetResultPtr()
	}
	return strings.TrimRight(fmt.Sprintf("%s  %-10s  attempt=%d  worker=%s  %s",
		at, client.StateName(j.GetState()), j.GetAttempt(), orDash(j.GetWorkerId()), why), " ")
}

// watch follows a job until it is terminal, printing each change to w
// (when w is not nil), starting with seen, the job as the caller already
// knows it (nil: none). waitFor bounds it (0: until terminal or
// interrupted). The error is nil only for a COMPLETED job.
func (s *session) watch(ctx context.Context, w io.Writer, jobID string, seen *pb.JobInfo, waitFor time.Duration) (*pb.JobInfo, error) {
	if waitFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, waitFor)
		defer cancel()
	}
	var (
		printed string
		latest  *pb.JobInfo // the job as last seen
	)
	show := func(j *pb.JobInfo) {
		latest = j
		if w == nil {
			return
		}
		// Watch reports changes of state, attempt and pending reason; the
		// first one it reports may be what the caller showed already.
		key := fmt.Sprint(j.GetState(), j.GetAttempt(), j.GetPendingReason())
		if key == printed {
			return
		}
		printed = key
		fmt.Fprintln(w, changeLine(j))
	}
	if seen == nil {
		// Ask once first, so that a job that does not exist, or a scheduler
		// that is not there, is an error at once; the watch then rides out
		// a scheduler's restart.
		reqCtx, cancel := s.request(ctx)
		job, err := s.client.Get(reqCtx, jobID)
		cancel()
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, errors.New("interrupted")
			}
			return nil, s.explain(err)
		}
		seen = job
	}
	show(seen)
	if client.IsTerminal(seen.GetState()) {
		return seen, endError(seen)
	}
	var final *pb.JobInfo
	var err error
	for job, werr := range s.client.Watch(ctx, jobID) {
		if werr != nil {
			final, err = job, werr
			break
		}
		show(job)
		final = job
	}
	if err != nil {
		if ctx.Err() == nil { // a definite answer: no such job, say
			return final, s.explain(err)
		}
		if final == nil {
			final = latest
		}
		interrupted := errors.Is(ctx.Err(), context.Canceled)
		why := ""
		if r := reason(final); r != "" {
			why = ": " + r
		}
		if interrupted {
			return final, fmt.Errorf("interrupted; job %s is %s%s", jobID, client.StateName(final.GetState()), why)
		}
		return final, fmt.Errorf("job %s is still %s after %s%s", jobID, client.StateName(final.GetState()), waitFor, why)
	}
	return final, endError(final)
}

// endError is nil for a COMPLETED job and says how any other ended.
func endError(j *pb.JobInfo) error {
	if j.GetState() == pb.JobState_JOB_STATE_COMPLETED {
		return nil
	}
	msg := fmt.Sprintf("job %s ended %s", j.GetJobId(), client.StateName(j.GetState()))
	if e := j.GetError(); e != "" {
		msg += ": " + e
	}
	return errors.New(msg)
}

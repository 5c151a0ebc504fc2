package main

// cortex policy: check a safety policy file, and see what it decides about
// a job (docs/policy.md).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check a safety policy, and see what it decides about a job",
		Long: `policy works on safety policy files offline: no NATS, no scheduler.
docs/policy.md describes the format; config/policy.yaml is the shipped default.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newPolicyCheckCommand(), newPolicyEvalCommand())
	return cmd
}

func newPolicyCheckCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --policy FILE",
		Short: "Validate a policy file and print every error with its line",
		Long: `check parses and validates a policy file as the scheduler and the safety
service would load it, and prints every problem as FILE:LINE:COL: FIELD: MESSAGE,
then exits 1. A valid policy prints "ok: version V, N rules".`,
		Example: `  cortex policy check --policy config/policy.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := safety.LoadPolicy(path)
			if err != nil {
				var pe *safety.PolicyError
				if !errors.As(err, &pe) {
					return err
				}
				out := cmd.OutOrStdout()
				for _, fe := range pe.Errors {
					fmt.Fprintln(out, placed(path, fe))
				}
				if len(pe.Errors) == 1 {
					return fmt.Errorf("policy %s is invalid: 1 error", path)
				}
				return fmt.Errorf("policy %s is invalid: %d errors", path, len(pe.Errors))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: version %s, %s\n", p.Version, plural(p.NumRules(), "rule"))
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "policy", "", "policy file (required)")
	_ = cmd.MarkFlagRequired("policy")
	return cmd
}

// placed is fe as a compiler would print it: FILE:LINE:COL: FIELD: MESSAGE.
func placed(path string, fe safety.FieldError) string {
	var b strings.Builder
	b.WriteString(path)
	if fe.Line > 0 {
		fmt.Fprintf(&b, ":%d", fe.Line)
		if fe.Col > 0 {
			fmt.Fprintf(&b, ":%d", fe.Col)
		}
	}
	b.WriteString(": ")
	if fe.Field != "" {
		b.WriteString(fe.Field)
		b.WriteString(": ")
	}
	b.WriteString(fe.Msg)
	return b.String()
}

func newPolicyEvalCommand() *cobra.Command {
	var (
		path, jobPath string
		repeat        int
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "eval --policy FILE --job FILE",
		Short: "Print what a policy decides about a job, by which rule and why",
		Long: `eval runs the safety kernel on a job described in a file and prints the
decision, the rule that made it (none: the policy's default), the reason and,
for a throttle, how long until the job would be admitted.

The job file is YAML or JSON with the field names of cortex.v1.JobRequest:
topic, tenant, priority (BATCH, INTERACTIVE, CRITICAL), env_vars,
required_capabilities, required_labels, payload (base64), context_ptr,
max_attempts, timeout_ms, ttl_ms, job_id. It may hold one job or a list of
jobs, evaluated in order by one kernel, so that throttles count; --repeat
evaluates each of them that many times. Without --policy the shipped default
policy decides.`,
		Example: `  cortex policy eval --policy config/policy.yaml --job job.yaml
  cortex policy eval --policy policy.yaml --job job.json --repeat 5 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if repeat < 1 {
				return errors.New("--repeat must be at least 1")
			}
			jobs, list, err := readJobs(jobPath)
			if err != nil {
				return err
			}
			// Run-time trouble (a when expression that fails) goes to stderr.
			cfg := safety.Config{Logger: logging.New(cmd.ErrOrStderr(), slog.LevelWarn), InstanceID: "cortex-policy-eval"}
			if path != "" {
				p, err := safety.LoadPolicy(path)
				if err != nil {
					return fmt.Errorf("%w\n(cortex policy check --policy %s lists every error)", err, path)
				}
				cfg.Policy = p
			}
			k, err := safety.New(cfg)
			if err != nil {
				return err
			}
			var results []evalResult
			for _, job := range jobs {
				for range repeat {
					v, _ := k.Check(context.Background(), job)
					results = append(results, resultOf(job, v))
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if list || repeat > 1 {
					return writeJSON(out, results)
				}
				return writeJSON(out, results[0])
			}
			for i, r := range results {
				if i > 0 {
					fmt.Fprintln(out)
				}
				if len(results) > 1 {
					fmt.Fprintf(out, "job:            #%d %s\n", i+1, r.JobID)
				}
				writeResult(out, r)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "policy", "", "policy file (default: the shipped default policy)")
	f.StringVar(&jobPath, "job", "", "job file, YAML or JSON (required)")
	f.IntVar(&repeat, "repeat", 1, "evaluate each job this many times (throttles count)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("job")
	return cmd
}

// evalResult is one decision as eval prints it.
type evalResult struct {
	JobID         string `json:"job_id,omitempty"`
	Decision      string `json:"decision"`
	RuleID        string `json:"rule_id"`
	Reason        string `json:"reason"`
	PolicyVersion string `json:"policy_version"`
	RetryAfterMs  int64  `json:"retry_after_ms,omitempty"`
	RetryAfter    string `json:"retry_after,omitempty"`
}

func resultOf(job *pb.JobRequest, v safety.Verdict) evalResult {
	r := evalResult{JobID: job.GetJobId(), Decision: v.Decision.String(), RuleID: v.RuleID, Reason: v.Reason, PolicyVersion: v.PolicyVersion}
	if v.Decision == safety.Throttle {
		r.RetryAfterMs = v.RetryAfterMs()
		r.RetryAfter = v.RetryAfter.String()
	}
	return r
}

func writeResult(w io.Writer, r evalResult) {
	rule := r.RuleID
	if rule == "" {
		rule = "(none: the policy's default)"
	}
	reason := r.Reason
	if reason == "" {
		reason = "-"
	}
	fmt.Fprintf(w, "decision:       %s\n", r.Decision)
	fmt.Fprintf(w, "rule:           %s\n", rule)
	fmt.Fprintf(w, "reason:         %s\n", reason)
	fmt.Fprintf(w, "policy_version: %s\n", r.PolicyVersion)
	if r.RetryAfter != "" {
		fmt.Fprintf(w, "retry_after:    %s\n", r.RetryAfter)
	}
}

// maxJobFileBytes bounds a job file.
const maxJobFileBytes = 8 << 20

// readJobs reads a job file: one JobRequest or a list of them, in YAML or
// JSON with protojson's field names. list says the file held a list.
func readJobs(path string) (jobs []*pb.JobRequest, list bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJobFileBytes+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > maxJobFileBytes {
		return nil, false, fmt.Errorf("job file %s: larger than %d bytes", path, maxJobFileBytes)
	}
	// YAML is a superset of JSON: decode either, then hand each job to
	// protojson as JSON, so that field names and values are checked as on
	// the wire.
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, false, fmt.Errorf("job file %s: %v", path, err)
	}
	var items []any
	switch d := doc.(type) {
	case []any:
		items, list = d, true
	case map[string]any:
		items = []any{d}
	case nil:
		return nil, false, fmt.Errorf("job file %s is empty", path)
	default:
		return nil, false, fmt.Errorf("job file %s: want a job (field: value lines) or a list of jobs", path)
	}
	if len(items) == 0 {
		return nil, false, fmt.Errorf("job file %s: an empty list", path)
	}
	for i, it := range items {
		where := path
		if list {
			where = fmt.Sprintf("%s, job #%d", path, i+1)
		}
		m, ok := it.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("job file %s: want field: value lines", where)
		}
		if p, ok := m["priority"].(string); ok {
			m["priority"] = wirePriorityName(p)
		}
		js, err := json.Marshal(m)
		if err != nil {
			return nil, false, fmt.Errorf("job file %s: %v", where, err)
		}
		job := &pb.JobRequest{}
		if err := protojson.Unmarshal(js, job); err != nil {
			return nil, false, fmt.Errorf("job file %s: %v", where, cleanProtojson(err))
		}
		jobs = append(jobs, job)
	}
	return jobs, list, nil
}

// wirePriorityName turns critical or CRITICAL into JOB_PRIORITY_CRITICAL,
// the enum name protojson reads.
func wirePriorityName(s string) string {
	up := strings.ToUpper(strings.TrimSpace(s))
	if strings.HasPrefix(up, "JOB_PRIORITY_") {
		return up
	}
	return "JOB_PRIORITY_" + up
}

// protojsonPlace is where protojson places an error: in the JSON made from
// the file, not in the file, so it is dropped.
var protojsonPlace = regexp.MustCompile(`^\(line \d+:\d+\): `)

// cleanProtojson drops protojson's "proto: " prefix, its place and its
// non-breaking spaces.
func cleanProtojson(err error) string {
	msg := strings.ReplaceAll(err.Error(), "\u00a0", " ")
	return protojsonPlace.ReplaceAllString(strings.TrimPrefix(msg, "proto: "), "")
}

// plural is "1 rule", "2 rules".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Package pyworker is the job.code.python worker: it runs the Python source
// of each job in the sandbox (internal/sandbox) and reports what it did.
//
// Where a job's source comes from: the job's
// payload (JobRequest.payload, `cortex submit --payload`), else its
// context_ptr: a data: URL (`data:text/x-python;base64,...`; the scheduler
// caps context_ptr at 4096 bytes) or obj://<bucket>/<key>, an object in a
// JetStream object store (pkg/blob, docs/blobs.md). The job's env_vars become the program's
// environment (LD_*, PYTHON*, PATH and HOME refused). The result is JSON,
// {"exit_code","stdout","stderr","duration_ms","truncated"}, inline in
// result_ptr as data:application/json;base64,... . docs/code-python.md.
package pyworker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cortex-os/core/internal/sandbox"
	"github.com/cortex-os/core/pkg/blob"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Topic is the subject code jobs are dispatched on.
const Topic = "job.code.python"

// MaxSource caps a job's source.
const MaxSource = 1 << 20

// MaxInlinePointer is the longest result_ptr that goes inline as a data:
// URL: the scheduler refuses a longer one (its field limits,
// docs/security.md). A longer result goes to the object store.
const MaxInlinePointer = 4096

// ResultBucket is where results too large to go inline are stored, as the
// Python SDK does: obj://CORTEX_BLOBS/results/<job_id>/<attempt>/<random>.
const ResultBucket = blob.DefaultBucket

// Handler runs jobs in a sandbox.
type Handler struct {
	Sandbox *sandbox.Sandbox
	// Blobs reads obj:// pointers (its MaxBytes should be MaxSource); nil:
	// they are refused.
	Blobs *blob.Store
}

// Output is the job's result, as JSON in result_ptr.
type Output struct {
	ExitCode   int    `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	DurationMs int64  `json:"duration_ms"`
	Truncated  bool   `json:"truncated"`
}

// errSource is wrapped by every problem with a job's source.
var errSource = errors.New("source")

// HandleJob runs the job's source. A run that exits 0 completes the job;
// one that exits otherwise, is killed by a limit or times out fails it with
// the reason and the tail of its stderr.
func (h *Handler) HandleJob(ctx context.Context, req *pb.JobRequest) (string, error) {
	src, err := h.source(ctx, req)
	if err != nil {
		return "", err
	}
	res, err := h.Sandbox.Run(ctx, sandbox.Program{Source: src, Env: req.GetEnvVars()})
	if err != nil {
		return "", err
	}
	out := Output{
		ExitCode:   res.ExitCode,
		Stdout:     validUTF8(res.Stdout),
		Stderr:     validUTF8(res.Stderr),
		DurationMs: res.Duration.Milliseconds(),
		Truncated:  res.Truncated(),
	}
	js, err := json.Marshal(out)
	if err != nil {
		return "", err
	}
	ptr := "data:application/json;base64," + base64.StdEncoding.EncodeToString(js)
	if len(ptr) > MaxInlinePointer {
		if h.Blobs == nil {
			return "", fmt.Errorf("the result (%d bytes) is too large to go inline and there is no object store", len(js))
		}
		p, err := h.Blobs.PutBytes(ctx, blob.NewKey(fmt.Sprintf("results/%s/%d/", req.GetJobId(), req.GetAttempt())), js)
		if err != nil {
			return "", fmt.Errorf("storing the result: %w", err)
		}
		ptr = p.String()
	}
	reason := res.Reason(h.Sandbox.Limits())
	switch {
	case reason == "":
		return ptr, nil
	case res.TimedOut || res.Cancelled:
		if err := context.Cause(ctx); err != nil {
			return ptr, fmt.Errorf("%s: %w", reason, err) // the worker reports a timeout or cancel as such
		}
		return ptr, errors.New(reason + " (" + h.Sandbox.Limits().Wall.String() + ")")
	}
	msg := reason
	if reason != fmt.Sprintf("exit code %d", res.ExitCode) {
		msg += fmt.Sprintf(" (exit code %d)", res.ExitCode)
	}
	if tail := stderrTail(res.Stderr, 1024); tail != "" {
		msg += ": " + tail
	}
	return ptr, errors.New(msg)
}

// source finds the job's program: payload, else context_ptr (a data: URL or
// an obj:// object, read through pkg/blob).
func (h *Handler) source(ctx context.Context, req *pb.JobRequest) ([]byte, error) {
	if p := req.GetPayload(); len(p) > 0 {
		if len(p) > MaxSource {
			return nil, fmt.Errorf("%w: %d bytes, at most %d", errSource, len(p), MaxSource)
		}
		return p, nil
	}
	ptr := req.GetContextPtr()
	if ptr == "" {
		return nil, fmt.Errorf("%w: the job has no payload and no context_ptr: nothing to run", errSource)
	}
	p, err := blob.ParsePointer(ptr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errSource, err)
	}
	var data []byte
	switch p.Scheme {
	case blob.SchemeData:
		data = p.Data
	case blob.SchemeObj:
		if h.Blobs == nil {
			return nil, fmt.Errorf("%w: %s: this worker reads no object store", errSource, ptr)
		}
		if data, err = h.Blobs.Get(ctx, ptr); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errSource, ptr, err)
		}
	default:
		return nil, fmt.Errorf("%w: context_ptr scheme %q: want data: or obj://", errSource, p.Scheme)
	}
	if len(data) > MaxSource {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errSource, len(data), MaxSource)
	}
	return data, nil
}

func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// stderrTail is the last lines of stderr, at most n bytes.
func stderrTail(b []byte, n int) string {
	s := strings.TrimSpace(validUTF8(b))
	if len(s) > n {
		s = s[len(s)-n:]
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
		s = "…" + s
	}
	return s
}

// Package pyworker is the job.code.python worker: it runs the Python source
// of each job in the sandbox (internal/sandbox) and reports what it did.
//
// Where a job's source comes from, until the blob store exists: the job's
// payload (JobRequest.payload, `cortex submit --payload`), else its
// context_ptr: a data: URL (`data:text/x-python;base64,...`; the scheduler
// caps context_ptr at 4096 bytes) or obj://<bucket>/<key>, an object in a
// JetStream object store. The job's env_vars become the program's
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
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/cortex-os/core/internal/sandbox"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Topic is the subject code jobs are dispatched on.
const Topic = "job.code.python"

// MaxSource caps a job's source.
const MaxSource = 1 << 20

// ObjectReader reads obj://<bucket>/<key> pointers: at most max bytes.
type ObjectReader interface {
	ReadObject(ctx context.Context, bucket, key string, max int) ([]byte, error)
}

// ObjectWriter stores a result too large to go inline, and returns its
// obj://<bucket>/<key> pointer.
type ObjectWriter interface {
	WriteObject(ctx context.Context, bucket, key string, data []byte) (string, error)
}

// ObjectStore reads sources and writes results.
type ObjectStore interface {
	ObjectReader
	ObjectWriter
}

// MaxInlinePointer is the longest result_ptr that goes inline as a data:
// URL: the scheduler refuses a longer one (its field limits,
// docs/security.md). A longer result goes to the object store.
const MaxInlinePointer = 4096

// ResultBucket is where results too large to go inline are stored, as the
// Python SDK stores them: obj://CORTEX_BLOBS/results/<job_id>/<attempt>.
const ResultBucket = "CORTEX_BLOBS"

// Handler runs jobs in a sandbox.
type Handler struct {
	Sandbox *sandbox.Sandbox
	Objects ObjectStore // nil: obj:// pointers are refused, and results must fit inline
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
		if h.Objects == nil {
			return "", fmt.Errorf("the result (%d bytes) is too large to go inline and there is no object store", len(js))
		}
		key := fmt.Sprintf("results/%s/%d", req.GetJobId(), req.GetAttempt())
		if ptr, err = h.Objects.WriteObject(ctx, ResultBucket, key, js); err != nil {
			return "", fmt.Errorf("storing the result: %w", err)
		}
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

// source finds the job's program: payload, else context_ptr.
func (h *Handler) source(ctx context.Context, req *pb.JobRequest) ([]byte, error) {
	if p := req.GetPayload(); len(p) > 0 {
		if len(p) > MaxSource {
			return nil, fmt.Errorf("%w: %d bytes, at most %d", errSource, len(p), MaxSource)
		}
		return p, nil
	}
	ptr := req.GetContextPtr()
	switch {
	case ptr == "":
		return nil, fmt.Errorf("%w: the job has no payload and no context_ptr: nothing to run", errSource)
	case strings.HasPrefix(ptr, "data:"):
		return parseDataURL(ptr)
	case strings.HasPrefix(ptr, "obj://"):
		bucket, key, ok := strings.Cut(strings.TrimPrefix(ptr, "obj://"), "/")
		if !ok || bucket == "" || key == "" {
			return nil, fmt.Errorf("%w: %q: want obj://<bucket>/<key>", errSource, ptr)
		}
		if h.Objects == nil {
			return nil, fmt.Errorf("%w: %s: this worker reads no object store", errSource, ptr)
		}
		data, err := h.Objects.ReadObject(ctx, bucket, key, MaxSource)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errSource, ptr, err)
		}
		return data, nil
	}
	scheme, _, _ := strings.Cut(ptr, ":")
	return nil, fmt.Errorf("%w: context_ptr scheme %q: want data: or obj://", errSource, scheme)
}

// parseDataURL decodes data:[<media type>][;base64],<data> (RFC 2397).
func parseDataURL(ptr string) ([]byte, error) {
	head, body, ok := strings.Cut(strings.TrimPrefix(ptr, "data:"), ",")
	if !ok {
		return nil, fmt.Errorf("%w: data: URL without a comma", errSource)
	}
	if strings.HasSuffix(head, ";base64") {
		b, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("%w: data: URL: %v", errSource, err)
		}
		return b, nil
	}
	s, err := url.PathUnescape(body)
	if err != nil {
		return nil, fmt.Errorf("%w: data: URL: %v", errSource, err)
	}
	return []byte(s), nil
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

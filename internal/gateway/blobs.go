package gateway

// Inputs beyond a JSON body's bound, and results, through the blob store
// (pkg/blob, docs/blobs.md).
//
// POST /v1/jobs with Content-Type: application/octet-stream takes the
// input as the raw body, up to the blob store's cap (64 MiB by default),
// and the job's fields as query parameters. The input goes inline in the
// job when it is small (pkg/client's inline limit, 256 KiB) and is
// uploaded to the blob store, passed as an obj:// context_ptr, when not.
//
// GET /v1/jobs/{id}/result answers a job's result bytes:
//
//	200  the bytes (Content-Type: application/octet-stream)
//	204  the job COMPLETED with no result_ptr
//	404  no such job (or another tenant's)
//	409  the job has not ended yet (state in the message; Retry-After: 1)
//	422  the job ended without a result (FAILED, DENIED, TIMEOUT, CANCELLED),
//	     or its result_ptr is of a scheme the gateway cannot read (memory://)
//	502  the result object is gone from the store, or does not match its digest

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Codes of the result route's errors.
const (
	codeNotTerminal = "not_terminal"
	codeNoResult    = "no_result"
	codeBadResult   = "result_unavailable"
)

// rawQuery are the query parameters of a raw-body submission.
var rawQuery = []string{"topic", "priority", "tenant", "job_id", "max_attempts", "timeout_ms", "ttl_ms", "env", "required_capabilities", "required_labels"}

// isRaw reports whether r's body is a raw input (application/octet-stream).
func isRaw(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/octet-stream"
}

// bodyLimit is the size a route's body may have: MaxBodyBytes, or, for a
// raw input, the blob store's cap.
func (s *Server) bodyLimit(rt route, r *http.Request) int64 {
	if rt.RawBody && isRaw(r) {
		return s.cfg.Client.Blobs().MaxBytes()
	}
	return MaxBodyBytes
}

// rawSubmit reads a raw-body submission: the job's fields from the query,
// the input from the body.
func rawSubmit(r *http.Request) (*pb.JobRequest, []byte, error) {
	q := r.URL.Query()
	for name := range q {
		known := false
		for _, k := range rawQuery {
			known = known || k == name
		}
		if !known {
			return nil, nil, errorf(http.StatusBadRequest, codeInvalid, name, "unknown query parameter %q", name)
		}
	}
	b := SubmitBody{Topic: q.Get("topic"), Priority: q.Get("priority"), Tenant: q.Get("tenant"), JobID: q.Get("job_id")}
	ints := map[string]*int64{"timeout_ms": &b.TimeoutMs, "ttl_ms": &b.TTLMs}
	var attempts int64
	ints["max_attempts"] = &attempts
	for name, dst := range ints {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 32)
			if name != "max_attempts" {
				n, err = strconv.ParseInt(v, 10, 64)
			}
			if err != nil {
				return nil, nil, errorf(http.StatusBadRequest, codeInvalid, name, "%s %q: want an integer", name, v)
			}
			*dst = n
		}
	}
	b.MaxAttempts = int32(attempts)
	pairs := func(name string) (map[string]string, error) {
		if len(q[name]) == 0 {
			return nil, nil
		}
		m := map[string]string{}
		for _, kv := range q[name] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, errorf(http.StatusBadRequest, codeInvalid, name, "%s %q: want KEY=VALUE", name, kv)
			}
			m[k] = v
		}
		return m, nil
	}
	var err error
	if b.Env, err = pairs("env"); err != nil {
		return nil, nil, err
	}
	if b.RequiredLabels, err = pairs("required_labels"); err != nil {
		return nil, nil, err
	}
	for _, c := range q["required_capabilities"] {
		for _, one := range strings.Split(c, ",") {
			if one = strings.TrimSpace(one); one != "" {
				b.RequiredCapabilities = append(b.RequiredCapabilities, one)
			}
		}
	}
	req, err := b.request()
	if err != nil {
		return nil, nil, err
	}
	data, err := readBody(r)
	if err != nil {
		return nil, nil, err
	}
	return req, data, nil
}

func (s *Server) result(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	job, err := s.visibleJob(r.Context(), c, id)
	if err != nil {
		s.fail(w, r, unknownAsNotFound(err, id))
		return
	}
	state := client.StateName(job.GetState())
	switch {
	case !client.IsTerminal(job.GetState()):
		e := errorf(http.StatusConflict, codeNotTerminal, "", "job %s is %s: it has not ended, so it has no result yet", id, state)
		e.retryAfter = time.Second
		s.fail(w, r, e)
		return
	case job.GetState() != pb.JobState_JOB_STATE_COMPLETED:
		msg := "job %s ended %s: no result"
		if job.GetError() != "" {
			msg += " (" + strings.ReplaceAll(job.GetError(), "%", "%%") + ")"
		}
		s.fail(w, r, errorf(http.StatusUnprocessableEntity, codeNoResult, "", msg, id, state))
		return
	case job.GetResultPtr() == "":
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ptr := job.GetResultPtr()
	rc, size, err := s.cfg.Client.Blobs().Open(r.Context(), ptr)
	switch {
	case errors.Is(err, blob.ErrUnsupported), errors.Is(err, blob.ErrBadPointer):
		s.fail(w, r, errorf(http.StatusUnprocessableEntity, codeNoResult, "", "job %s's result_ptr %s is not in the blob store (only obj:// and data: are read): the worker keeps it", id, ptr))
		return
	case err != nil:
		s.fail(w, r, errorf(http.StatusBadGateway, codeBadResult, "", "job %s's result %s: %v", id, ptr, err))
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("X-Cortex-Result-Ptr", ptr)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		// The bytes did not match their digest, or the store failed: cut
		// the connection, so the caller sees a short body, not a result.
		s.log.Info("result cut", "request_id", r.Context().Value(requestIDKey{}), "job_id", id, "err", err)
		panic(http.ErrAbortHandler)
	}
}

package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// SubmitBody is the body of POST /v1/jobs and POST /v1/policy/eval.
type SubmitBody struct {
	Topic                string            `json:"topic"`
	Priority             string            `json:"priority,omitempty"` // BATCH, INTERACTIVE or CRITICAL (any case); "" the default
	Tenant               string            `json:"tenant,omitempty"`
	JobID                string            `json:"job_id,omitempty"`
	Env                  map[string]string `json:"env,omitempty"`
	MaxAttempts          int32             `json:"max_attempts,omitempty"`
	TimeoutMs            int64             `json:"timeout_ms,omitempty"`
	TTLMs                int64             `json:"ttl_ms,omitempty"`
	RequiredCapabilities []string          `json:"required_capabilities,omitempty"`
	RequiredLabels       map[string]string `json:"required_labels,omitempty"`
	Input                *string           `json:"input,omitempty"`        // UTF-8 text
	InputBase64          *string           `json:"input_base64,omitempty"` // bytes, standard base64
}

// CancelBody is the optional body of POST /v1/jobs/{id}/cancel.
type CancelBody struct {
	Reason string `json:"reason,omitempty"`
}

// decodeJSON reads one JSON object from data into v strictly: unknown
// fields, a wrong type, trailing data are 400 naming the field.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr):
			return errorf(http.StatusBadRequest, codeInvalid, typeErr.Field, "field %s: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
		case errors.As(err, &syntaxErr):
			return errorf(http.StatusBadRequest, codeInvalid, "", "malformed JSON at byte %d: %v", syntaxErr.Offset, err)
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, codeInvalid, "", "empty body: want a JSON object")
		}
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			f = strings.Trim(f, `"`)
			return errorf(http.StatusBadRequest, codeInvalid, f, "unknown field %q", f)
		}
		return errorf(http.StatusBadRequest, codeInvalid, "", "malformed JSON: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, codeInvalid, "", "trailing data after the JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, codeInvalid, "", "trailing data after the JSON object")
	}
	return nil
}

// DecodeSubmit reads a submission body into a JobRequest. Every error is
// an *apiError (400) naming the field where there is one. The scheduler
// checks the rest (docs/api.md lists its bounds).
func DecodeSubmit(data []byte) (*pb.JobRequest, error) {
	var b SubmitBody
	if err := decodeJSON(data, &b); err != nil {
		return nil, err
	}
	return b.request()
}

func (b *SubmitBody) request() (*pb.JobRequest, error) {
	req := &pb.JobRequest{
		JobId: b.JobID, Topic: b.Topic, Tenant: b.Tenant, EnvVars: b.Env,
		MaxAttempts: b.MaxAttempts, TimeoutMs: b.TimeoutMs, TtlMs: b.TTLMs,
		RequiredCapabilities: b.RequiredCapabilities, RequiredLabels: b.RequiredLabels,
	}
	if b.Topic == "" {
		return nil, errorf(http.StatusBadRequest, codeInvalid, "topic", "topic is required (job.<name>)")
	}
	if b.Priority != "" {
		v, ok := pb.JobPriority_value["JOB_PRIORITY_"+strings.ToUpper(b.Priority)]
		if !ok || v == 0 {
			return nil, errorf(http.StatusBadRequest, codeInvalid, "priority", "priority %q: want BATCH, INTERACTIVE or CRITICAL", b.Priority)
		}
		req.Priority = pb.JobPriority(v)
	}
	if b.MaxAttempts < 0 || b.TimeoutMs < 0 || b.TTLMs < 0 {
		field := "max_attempts"
		if b.TimeoutMs < 0 {
			field = "timeout_ms"
		} else if b.TTLMs < 0 {
			field = "ttl_ms"
		}
		return nil, errorf(http.StatusBadRequest, codeInvalid, field, "%s must not be negative", field)
	}
	switch {
	case b.Input != nil && b.InputBase64 != nil:
		return nil, errorf(http.StatusBadRequest, codeInvalid, "input", "give input or input_base64, not both")
	case b.Input != nil:
		if !utf8.ValidString(*b.Input) {
			return nil, errorf(http.StatusBadRequest, codeInvalid, "input", "input must be UTF-8 text (use input_base64 for bytes)")
		}
		req.Payload = []byte(*b.Input)
	case b.InputBase64 != nil:
		p, err := base64.StdEncoding.DecodeString(*b.InputBase64)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, codeInvalid, "input_base64", "input_base64 is not standard base64: %v", err)
		}
		req.Payload = p
	}
	return req, nil
}

// readBody reads a request body (capped by the server at MaxBodyBytes).
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, errorf(http.StatusBadRequest, codeInvalid, "", "reading the body: %v", err)
	}
	return data, nil
}

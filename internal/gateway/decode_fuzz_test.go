package gateway

import (
	"errors"
	"testing"
)

// FuzzDecodeSubmit: any body decodes to a request or a 400 naming why;
// never a panic.
func FuzzDecodeSubmit(f *testing.F) {
	for _, s := range []string{
		`{"topic":"job.echo"}`,
		`{"topic":"job.echo","priority":"CRITICAL","tenant":"a","job_id":"j1","env":{"K":"v"},"max_attempts":3,"timeout_ms":1000,"ttl_ms":5000,"required_capabilities":["gpu"],"required_labels":{"zone":"eu"},"input":"hi"}`,
		`{"topic":"job.echo","input_base64":"aGk="}`,
		`{"topic":"job.echo","input":"x","input_base64":"eA=="}`,
		`{"topic":1}`, `[]`, ``, `{"topic":"job.echo"} x`, `{"colour":"red"}`, "{\"input\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeSubmit(data)
		if err != nil {
			var e *apiError
			if !errors.As(err, &e) || e.status != 400 || e.Message == "" {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if req.GetTopic() == "" {
			t.Fatal("decoded a request without a topic")
		}
	})
}

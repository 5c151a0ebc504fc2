package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/internal/gateway/apiclient"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/worker"
)

// The OpenAPI document the client is generated from is the one the gateway
// serves; CORTEX_WRITE_OPENAPI=1 (go generate ./internal/gateway/apiclient)
// rewrites it.
func TestOpenAPIFileFresh(t *testing.T) {
	b, err := json.MarshalIndent(gateway.OpenAPI(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	path := filepath.Join("apiclient", "openapi.json")
	if os.Getenv("CORTEX_WRITE_OPENAPI") != "" {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, b) {
		t.Errorf("%s is stale: run go generate ./internal/gateway/apiclient (it regenerates the client too)", path)
	}
}

// A client generated from /openapi.json drives a real gateway, scheduler
// and worker: submit (JSON and raw), get, result, whoami, errors.
func TestGeneratedClient(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	if _, err := rg.env.RunWorker(worker.Config{Kind: "res", Handler: resultHandler}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	as := func(key string) *apiclient.ClientWithResponses {
		c, err := apiclient.NewClientWithResponses(rg.url, apiclient.WithHTTPClient(rg.http),
			apiclient.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
				if key != "" {
					req.Header.Set("Authorization", "Bearer "+key)
				}
				return nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := as("key-a")

	me, err := a.WhoAmIWithResponse(ctx)
	if err != nil || me.JSON200 == nil || me.JSON200.Id != "a-submitter" || me.JSON200.Tenant == nil || *me.JSON200.Tenant != "a" {
		t.Fatalf("whoami: %v %+v", err, me)
	}
	id, input := "gen-1", "from the generated client"
	sub, err := a.SubmitJobWithResponse(ctx, nil, apiclient.SubmitJob{Topic: "job.res", JobId: &id, Input: &input})
	if err != nil || sub.JSON201 == nil || sub.JSON201.JobId != id {
		t.Fatalf("submit: %v %d %s", err, sub.StatusCode(), sub.Body)
	}
	waitDone := func(id string) {
		systest.Poll(t, waitFor, 20*time.Millisecond, "job "+id+" COMPLETED", func() (bool, string) {
			j, err := a.GetJobWithResponse(ctx, id)
			if err != nil || j.JSON200 == nil {
				t.Fatalf("get %s: %v %+v", id, err, j)
			}
			return j.JSON200.State == "COMPLETED", string(j.JSON200.State)
		})
	}
	waitDone(id)
	res, err := a.GetJobResultWithResponse(ctx, id)
	if err != nil || res.StatusCode() != 200 || string(res.Body) != input {
		t.Errorf("result: %v %d %q", err, res.StatusCode(), res.Body)
	}

	// Raw, beyond the JSON bound.
	big := bytes.Repeat([]byte("0123456789abcdef"), (2<<20)/16)
	topic, rawID := "job.res", "gen-raw"
	raw, err := a.SubmitJobWithBodyWithResponse(ctx, &apiclient.SubmitJobParams{Topic: &topic, JobId: &rawID, Env: &[]string{"K=v"}},
		"application/octet-stream", bytes.NewReader(big))
	if err != nil || raw.JSON201 == nil || raw.JSON201.ContextPtr == nil || (*raw.JSON201.Env)["K"] != "v" {
		t.Fatalf("raw submit: %v %d %s", err, raw.StatusCode(), raw.Body)
	}
	waitDone(rawID)
	if res, err := a.GetJobResultWithResponse(ctx, rawID); err != nil || !bytes.Equal(res.Body, big) {
		t.Errorf("raw result: %v, %d bytes", err, len(res.Body))
	}

	// Errors come back typed.
	if r, err := a.GetJobWithResponse(ctx, "nope"); err != nil || r.JSON404 == nil || r.JSON404.Error.Code != "not_found" {
		t.Errorf("unknown job: %v %+v", err, r)
	}
	if r, err := as("").ListJobsWithResponse(ctx, nil); err != nil || r.JSON401 == nil {
		t.Errorf("no key: %v %d", err, r.StatusCode())
	}
	if r, err := as("key-b").GetJobResultWithResponse(ctx, id); err != nil || r.JSON404 == nil {
		t.Errorf("another tenant's result: %v %d", err, r.StatusCode())
	}
}

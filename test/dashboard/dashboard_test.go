package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/gateway"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// updateScreenshots writes a screenshot of each page to docs/img/:
//
//	go test ./test/dashboard -run TestDashboard -update-screenshots
var updateScreenshots = flag.Bool("update-screenshots", false, "write the dashboard's screenshots to docs/img/")

// waitFor bounds every wait; reaching it is a failure, not a timing.
const waitFor = 30 * time.Second

// The keys: the key is its name.
var keys = []gateway.KeyConfig{
	{ID: "ops", SHA256: gateway.HashKey("key-admin"), Role: "admin"},
	{ID: "team-a-viewer", SHA256: gateway.HashKey("key-a-viewer"), Tenant: "a", Role: "viewer"},
	{ID: "team-a", SHA256: gateway.HashKey("key-a"), Tenant: "a", Role: "submitter"},
}

// chromium finds the browser. Without one the test fails in CI (CI set)
// and is skipped elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: CI must install it (apt-get install chromium; .ci/run does)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium): the browser test is skipped outside CI")
	return ""
}

// handler: job ids starting fail- fail, gated- wait for their gate, the
// rest echo.
type handler struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
}

func (h *handler) gate(id string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gates == nil {
		h.gates = map[string]chan struct{}{}
	}
	if h.gates[id] == nil {
		h.gates[id] = make(chan struct{})
	}
	return h.gates[id]
}

func (h *handler) HandleJob(ctx context.Context, job *worker.Job) (worker.Result, error) {
	switch {
	case strings.HasPrefix(job.ID(), "fail-"):
		return worker.Result{}, errors.New("the model refused the input: quota exceeded")
	case strings.HasPrefix(job.ID(), "gated-"):
		select {
		case <-h.gate(job.ID()):
		case <-ctx.Done():
			return worker.Result{}, ctx.Err()
		}
	}
	return echo.Handler(echo.WorkTime{})(ctx, job)
}

type rig struct {
	url string
	h   *handler
}

// start runs NATS, a scheduler, an echo worker and the gateway with keys.
func start(t *testing.T) *rig {
	t.Helper()
	env := workertest.Start(t)
	h := &handler{}
	if _, err := env.RunWorker(worker.Config{Kind: "echo", Handler: h, Capacity: 4, Labels: map[string]string{"region": "eu", "gpu": "none"}}); err != nil {
		t.Fatal(err)
	}
	ks, err := gateway.NewKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{Client: env.Client(), Keys: ks, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &rig{url: ts.URL, h: h}
}

// post calls the API as a program would, outside the page.
func (rg *rig) post(t *testing.T, path, key, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequest("POST", rg.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", path, res.StatusCode, b)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// browser is a headless Chromium tab; JavaScript exceptions and refused
// loads (the Content-Security-Policy) in it fail the test.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1366, 860), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser: no timeout on this first call
		cancel()
		t.Fatalf("starting %s: %v", path, err)
	}
	var problems []string
	done := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			// The page's own refused requests (a 401 before the key) are
			// network errors, expected; a refused load is a security one.
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				problems = append(problems, string(m.Type)+": "+m.Text)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		for _, p := range problems {
			t.Errorf("in the page: %s", p)
		}
	})
	return &browser{t: t, ctx: ctx}
}

func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

// until polls expr in the page until it is true.
func (b *browser) until(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+expr+`)`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			banner, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById("banner").textContent`))
			page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`JSON.stringify({jobs: document.getElementById("jobs-status").textContent,
				dlq: document.getElementById("dlq-status").textContent, live: document.getElementById("live").textContent,
				cancel: document.getElementById("jobs-cancel").disabled, selected: [...cortexDashboard.selected],
				rows: [...document.querySelectorAll("#jobs-body tr[data-job-id]")].map(r => r.dataset.jobId + ":" + r.dataset.state)})`))
			b.t.Fatalf("%s: not within %s (%s; err %v; banner %q; page %s)", what, waitFor, expr, err, banner, page)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eval runs a script in the page and returns whether its value is true.
func (b *browser) eval(expr string) bool {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		b.t.Fatal(err)
	}
	return v == true
}

func (b *browser) click(sel string) { b.t.Helper(); b.run(chromedp.Click(chromedp.CSS(sel))) }

func (b *browser) useKey(key string) {
	b.t.Helper()
	b.run(chromedp.SetValue(chromedp.CSS("#key-input"), key), chromedp.Click(chromedp.CSS("#key-save")))
}

func (b *browser) show(page string) {
	b.t.Helper()
	b.eval(fmt.Sprintf(`location.hash = %q`, "#/"+page))
}

func (b *browser) screenshot() []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatal(err)
	}
	return png
}

func row(id string) string { return fmt.Sprintf(`#jobs-body tr[data-job-id=%q]`, id) }

// The dashboard end to end in a real browser against a real scheduler: a
// job submitted through the API appears and turns COMPLETED without a
// reload; the failed jobs are one click away; dead letters are retried from
// the page, one and in bulk; running jobs are cancelled in bulk; a viewer's
// key sees its tenant and cannot press what it may not.
func TestDashboard(t *testing.T) {
	path := chromium(t)
	rg := start(t)
	b := newBrowser(t, path)

	b.run(chromedp.Navigate(rg.url + "/#/jobs"))
	b.until("the page asks for a key", `document.getElementById("banner").textContent.includes("API key")`)
	b.useKey("key-admin")
	b.until("the key is taken", `document.getElementById("who").textContent.includes("ops · admin")`)
	b.until("live", `document.getElementById("live").classList.contains("on")`)
	b.eval(`window.__sameDocument = true`) // gone if the page reloads

	// Submitted through the API: appears, runs, completes, live.
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"gated-1","input":"hello dashboard"}`)
	b.until("the new job appears running", `document.querySelector('`+row("gated-1")+`[data-state="RUNNING"]')`)
	close(rg.h.gate("gated-1"))
	b.until("the job turns COMPLETED", `document.querySelector('`+row("gated-1")+`[data-state="COMPLETED"]')`)

	// A failed job, one click away.
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"fail-1","max_attempts":1}`)
	b.until("the failing job shows FAILED", `document.querySelector('`+row("fail-1")+`[data-state="FAILED"]')`)
	b.click("#f-failed")
	b.until("only failed jobs are listed", `document.querySelector('`+row("fail-1")+`') && !document.querySelector('`+row("gated-1")+`')
		&& [...document.querySelectorAll("#jobs-body tr[data-state]")].every(r => r.dataset.state === "FAILED")`)

	// Its detail: the error, the transitions, the trace id, the safety decision.
	b.click(row("fail-1") + ` a`)
	b.until("the detail shows the failure", `document.getElementById("jd-error").textContent.includes("quota exceeded")
		&& document.querySelector('#jd-transitions tr[data-state="FAILED"]')
		&& document.querySelector('#jd-fields tr[data-field="trace id"] td').textContent.length > 0
		&& document.querySelector('#jd-safety tr[data-field="policy version"]')`)

	// The dead-letter queue, and a retry from it.
	b.show("dlq")
	b.until("the dead letter is listed", `document.querySelector('#dlq-body tr[data-job-id="fail-1"] button.retry:not(:disabled)')`)
	b.click(`#dlq-body tr[data-job-id="fail-1"] button.retry`)
	b.until("the retry ran", `document.getElementById("dlq-status").textContent.includes("retried fail-1 as fail-1-redrive-1")`)
	b.show("jobs")
	b.click("#f-clear")
	b.until("the re-driven job is listed live", `document.querySelector('`+row("fail-1-redrive-1")+`')`)

	// Bulk retry from the dead-letter queue.
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"fail-2","max_attempts":1}`)
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"fail-3","max_attempts":1}`)
	b.until("the failing jobs fail", `document.querySelector('`+row("fail-2")+`[data-state="FAILED"]') && document.querySelector('`+row("fail-3")+`[data-state="FAILED"]')`)
	b.show("dlq")
	b.until("both dead letters are listed", `document.querySelector('#dlq-body tr[data-job-id="fail-2"]') && document.querySelector('#dlq-body tr[data-job-id="fail-3"]')`)
	b.click("#dlq-all")
	// A dead letter's event reloads the list: the selection stays.
	b.eval(`loadDLQ().then(() => { window.__dlqReloaded = true; }), true`)
	b.until("the dead letters reloaded", `window.__dlqReloaded`)
	b.until("the selection survives the reload", `cortexDashboard.dlqSelected.has("fail-2") && cortexDashboard.dlqSelected.has("fail-3")
		&& document.querySelector('#dlq-body tr[data-job-id="fail-2"] input[type=checkbox]:checked')`)
	b.click("#dlq-retry-selected")
	b.until("the bulk retry ran, none refused", `/^retry: [1-9][0-9]* done$/.test(document.getElementById("dlq-status").textContent)`)
	b.show("jobs")
	b.until("the re-driven jobs are listed live", `document.querySelector('`+row("fail-2-redrive-1")+`') && document.querySelector('`+row("fail-3-redrive-1")+`')`)

	// Bulk cancel of running jobs.
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"gated-2"}`)
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"gated-3"}`)
	b.until("both run", `document.querySelector('`+row("gated-2")+`[data-state="RUNNING"]') && document.querySelector('`+row("gated-3")+`[data-state="RUNNING"]')`)
	b.click(row("gated-2") + ` input[type=checkbox]`)
	// The list reloads under the user's hands (a reconnect, a resync, a
	// refresh): what they selected stays selected.
	b.eval(`loadJobs(false).then(() => { window.__reloaded = true; }), true`)
	b.until("the list reloaded", `window.__reloaded`)
	b.until("the selection survives the reload", `cortexDashboard.selected.has("gated-2") && document.querySelector('`+row("gated-2")+` input[type=checkbox]:checked')`)
	b.click(row("gated-3") + ` input[type=checkbox]`)
	b.until("both are selected", `document.getElementById("jobs-cancel").textContent === "Cancel selected (2)"`)
	b.click("#jobs-cancel")
	b.until("both are cancelled", `document.querySelector('`+row("gated-2")+`[data-state="CANCELLED"]') && document.querySelector('`+row("gated-3")+`[data-state="CANCELLED"]')`)

	// The job detail of a completed job: input and result pointer.
	b.show("job/gated-1")
	b.until("the completed job's input and result", `document.getElementById("jd-input").textContent === "hello dashboard"
		&& document.getElementById("jd-result").textContent.includes("memory://echo/gated-1")
		&& document.querySelector('#jd-transitions tr[data-state="RUNNING"][data-source="event"]')`)

	// The policy and its evaluation.
	b.show("policy")
	b.until("the policy", `document.querySelectorAll("#pol-rules li").length > 0`)
	b.run(chromedp.SetValue(chromedp.CSS("#ev-topic"), "sys.destroy"), chromedp.Click(chromedp.CSS("#ev-submit")))
	b.until("the evaluation denies", `document.getElementById("ev-result").textContent.includes("DENY")`)

	// Workers and overview.
	b.show("workers")
	b.until("the worker", `document.querySelector("#wk-body tr[data-worker-id]") && document.getElementById("wk-body").textContent.includes("region=eu")`)
	b.show("overview")
	b.until("the overview counts", `Number(document.querySelector('.card[data-state="COMPLETED"] .n').textContent) >= 1
		&& Number(document.querySelector('.card[data-state="FAILED"] .n').textContent) >= 1`)

	if !b.eval(`window.__sameDocument === true`) {
		t.Fatal("the page reloaded")
	}

	if *updateScreenshots {
		screenshots(t, rg, b)
	}

	// A viewer of tenant a: its tenant only, and no buttons it may not use.
	rg.post(t, "/v1/jobs", "key-a", `{"topic":"job.echo","job_id":"a-job"}`)
	b.click("#key-forget")
	b.useKey("key-a-viewer")
	b.until("the viewer's key is taken", `document.getElementById("who").textContent.includes("team-a-viewer · viewer · tenant a")`)
	b.show("jobs")
	b.click("#f-clear")
	b.until("the viewer sees its tenant's job only", `document.querySelector('`+row("a-job")+`') && !document.querySelector('`+row("gated-1")+`')`)
	b.until("the viewer's buttons are disabled", `document.getElementById("jobs-cancel").disabled && document.getElementById("f-tenant").disabled
		&& document.getElementById("ev-submit").disabled && document.getElementById("dlq-retry-selected").disabled`)
	b.show("dlq")
	b.until("the viewer sees no other tenant's dead letter", `document.getElementById("dlq-body").textContent.includes("empty")`)
}

// screenshots fills the system a little and writes a picture of each page.
func screenshots(t *testing.T, rg *rig, b *browser) {
	t.Helper()
	for i := range 12 {
		rg.post(t, "/v1/jobs", "key-admin", fmt.Sprintf(`{"topic":"job.echo","job_id":"summarise-%02d","tenant":"research","input":"document %d"}`, i, i))
	}
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"gated-embed","tenant":"search"}`)
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"fail-translate","tenant":"research","max_attempts":1}`)
	rg.post(t, "/v1/jobs", "key-admin", `{"topic":"job.echo","job_id":"needs-gpu","tenant":"search","required_capabilities":["gpu"]}`)
	t.Cleanup(func() { close(rg.h.gate("gated-embed")) })
	dir := filepath.Join("..", "..", "docs", "img")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shoot := func(name, page, ready string) {
		b.show(page)
		b.until(name+" ready", ready)
		time.Sleep(1500 * time.Millisecond) // let the row highlight fade: a picture, not an assertion
		if err := os.WriteFile(filepath.Join(dir, "dashboard-"+name+".png"), b.screenshot(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shoot("overview", "overview", `Number(document.querySelector('.card[data-state="COMPLETED"] .n').textContent) >= 12`)
	b.show("jobs")
	b.click("#f-clear")
	shoot("jobs", "jobs", `document.querySelector('`+row("summarise-11")+`[data-state="COMPLETED"]')`)
	shoot("job", "job/gated-1", `document.getElementById("jd-input").textContent === "hello dashboard"`)
	shoot("workers", "workers", `document.querySelector("#wk-body tr[data-worker-id]")`)
	shoot("dlq", "dlq", `document.querySelector('#dlq-body tr[data-job-id="fail-translate"]')`)
	shoot("policy", "policy", `document.getElementById("ev-result").textContent.includes("DENY")`)
}

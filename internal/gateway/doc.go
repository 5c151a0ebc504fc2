// Package gateway is the CortexOS front door: a stateless HTTP/JSON server
// that turns REST calls into requests to the schedulers over NATS, through
// pkg/client. It holds no job state: every answer is a scheduler's, and
// GET /v1/jobs/{id}/events streams the job's changes as the scheduler
// publishes them (sys.job.event.<tenant>.<job_id>, while the gateway follows
// the job: pkg/client announces it on sys.job.follow) as Server-Sent Events.
//
// Callers authenticate with API keys (Authorization: Bearer <key>), each
// stored as its SHA-256, bound to a tenant and a role (viewer, submitter,
// admin); internal/tenancy decides what a key's tenant may see and do,
// exactly as it does for a NATS client identity. Without keys every caller
// is an administrator, which cmd/cortex allows on a loopback address only.
//
// The routes are one table (routes.go): the server's mux and the OpenAPI
// document at /openapi.json are both built from it. docs/api.md is the
// reference.
package gateway

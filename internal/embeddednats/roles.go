package embeddednats

import (
	"crypto/rand"
	"fmt"
	"sort"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/tenancy"
)

// The roles of the CortexOS bus and what each may publish and subscribe to
// (docs/security.md). config/nats-auth.conf grants the same permissions, and
// a test (test/security) holds the two equal, so `cortex dev --auth` runs
// under the configuration the documentation ships.
//
// Every connection of a role reads its answers under its own inbox prefix,
// _INBOX.<user> (bus.DefaultInboxPrefix), and may subscribe to nothing else
// of the kind: a client reads its own answers only.

// Subjects the roles share.
const (
	subjectSubmit  = "sys.job.submit"
	subjectQuery   = "sys.job.query"
	subjectCancel  = "sys.job.cancel"
	subjectResult  = "sys.job.result"
	safetyCheck    = "sys.safety.check"
	safetyAudit    = "sys.safety.audit"
	allInboxes     = "_INBOX.>"
	schedulerAcks  = "_CORTEX.ack.>"
	jobStoreBucket = "$KV.CORTEX_JOBS.>"
	jobEvents      = "sys.job.event."
	jobFollow      = "sys.job.follow"
)

// InboxSubjects is what user may subscribe to for its answers: _INBOX.<user>.>.
func InboxSubjects(user string) string { return bus.DefaultInboxPrefix(user) + ".>" }

// The blob store's bucket (docs/blobs.md): an object store is the stream
// OBJ_<bucket>, its objects' chunks on $O.<bucket>.C.<nuid>, their metadata
// on $O.<bucket>.M.<encoded name>.
const (
	blobBucket = "CORTEX_BLOBS"
	streamBlob = "OBJ_" + blobBucket
	blobChunks = "$O." + blobBucket + ".C.*"
	blobMeta   = "$O." + blobBucket + ".M.*"
)

// BlobPermissions are what clients and workers need of the blob store, and
// no more: look the bucket up; read an object's metadata by its name (a
// direct get of the last message on its subject: no listing, no reading by
// sequence); write chunks and metadata; read one object's chunks through an
// ordered consumer filtered on that object's chunk subject, with its flow
// control, and delete that consumer. Anyone with them can read or replace
// an object whose name it knows: names must be unguessable (blob.NewKey).
func BlobPermissions() []string {
	return []string{
		jsStream + "INFO." + streamBlob,
		jsAPI + "DIRECT.GET." + streamBlob + "." + blobMeta,
		blobChunks, blobMeta,
		jsConsumer + "CREATE." + streamBlob + ".*." + blobChunks,
		jsConsumer + "DELETE." + streamBlob + ".*",
		"$JS.FC." + streamBlob + ".>",
	}
}

// ClientPermissions: the client whose identity (and NATS user) is user
// submits, queries and cancels jobs (cortex submit, job, dlq) on the
// subjects that name it, sys.job.<verb>.<user>, and reads its answers under
// its own inbox only. The scheduler answers it nowhere else, and holds it
// to the tenant its identity is bound to (docs/security.md). It reads every
// job's events (sys.job.event.>): it is the administrator's, or the HTTP
// gateway's, which holds each API key to its tenant itself. A tenant's
// client has TenantClientPermissions.
// It uploads inputs to and reads results from the blob store (BlobPermissions).
func ClientPermissions(user string) *server.Permissions {
	p := TenantClientPermissions(user, "")
	p.Subscribe.Allow[1] = jobEvents + ">"
	return p
}

// TenantClientPermissions are ClientPermissions for a client bound to
// tenant: it reads the events of its tenant's jobs only,
// sys.job.event.<tenant>.> ("" : the jobs of no tenant, sys.job.event._.>).
// Either announces on sys.job.follow the jobs it follows, whose events the
// schedulers publish meanwhile: any job id, or every job (publishing is
// all it causes; reading stays bound to its subjects).
func TenantClientPermissions(user, tenant string) *server.Permissions {
	if tenant == "" {
		tenant = "_"
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append([]string{
			subjectSubmit + "." + user, subjectQuery + "." + user, subjectCancel + "." + user, jobFollow,
		}, BlobPermissions()...)},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxSubjects(user), jobEvents + tenant + ".>"}},
	}
}

// The JetStream streams the scheduler keeps: the job bucket's, the
// submissions' and results' intake, the dead letters.
const (
	streamJobs    = "KV_CORTEX_JOBS"
	streamSubmit  = "CORTEX_JOB_SUBMIT"
	streamResult  = "CORTEX_JOB_RESULT"
	streamDLQ     = "CORTEX_DLQ"
	jsAPI         = "$JS.API."
	jsStream      = jsAPI + "STREAM."
	jsConsumer    = jsAPI + "CONSUMER."
	schedulerFlow = "$JS.FC." + streamJobs + ".>"
	// The leader lease of elected schedulers (scheduler.leader_election):
	// the bucket CORTEX_LEADER, one key, taken, renewed and given up with
	// compare-and-set writes and read with direct gets.
	streamLeader = "KV_CORTEX_LEADER"
	leaderBucket = "$KV.CORTEX_LEADER.>"
)

// schedulerJetStream is the JetStream API the scheduler uses, and nothing
// more: create, update and read its four streams; read the job bucket
// (direct get) and watch it (ordered consumers, created and deleted);
// consume the two intake streams with its durable consumers; read and take
// dead letters one message at a time. No stream may be purged or deleted,
// and no other stream touched.
func schedulerJetStream() []string {
	out := []string{jsAPI + "INFO"}
	for _, s := range []string{streamJobs, streamSubmit, streamResult, streamDLQ, streamBlob, streamLeader} {
		out = append(out, jsStream+"CREATE."+s, jsStream+"UPDATE."+s, jsStream+"INFO."+s)
	}
	out = append(out,
		jsAPI+"DIRECT.GET."+streamJobs, jsAPI+"DIRECT.GET."+streamJobs+".>", jsStream+"MSG.GET."+streamJobs,
		jsConsumer+"CREATE."+streamJobs+".>", jsConsumer+"DELETE."+streamJobs+".*",
		jsStream+"MSG.GET."+streamDLQ, jsStream+"MSG.DELETE."+streamDLQ,
		jsAPI+"DIRECT.GET."+streamLeader+".>", jsStream+"MSG.GET."+streamLeader,
	)
	for _, s := range []string{streamSubmit, streamResult} {
		out = append(out, jsConsumer+"CREATE."+s+".>", jsConsumer+"INFO."+s+".*", jsConsumer+"MSG.NEXT."+s+".*", "$JS.ACK."+s+".>")
	}
	return out
}

// SchedulerPermissions: take submissions, queries and cancels (on the bare
// subjects and those that name a client), results, heartbeats and follow
// announcements; dispatch
// on job.> and hear the workers' confirmations on _CORTEX.ack.>; cancel on
// sys.worker.<id>.cancel; answer clients' inboxes; ask the safety service;
// keep jobs in JetStream: the job bucket, the intake and dead-letter
// streams, through the part of the JetStream API it uses
// (schedulerJetStream), never purging or deleting a stream; hold the
// leader lease in CORTEX_LEADER.
func SchedulerPermissions(user string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append([]string{
			"job.>", "sys.worker.*.>", "sys.job.dlq.>", jobEvents + ">", allInboxes,
			safetyCheck, safetyAudit, jobStoreBucket, schedulerFlow, leaderBucket,
		}, schedulerJetStream()...)},
		Subscribe: &server.SubjectPermission{Allow: []string{
			subjectSubmit, subjectSubmit + ".>", subjectQuery, subjectQuery + ".>", subjectCancel, subjectCancel + ".>",
			subjectResult, subjectResult + ".>", "sys.heartbeat.>", jobFollow, schedulerAcks, InboxSubjects(user),
		}},
	}
}

// SafetyPermissions: answer safety checks (to whoever asked: responses
// only) and publish the audit records.
func SafetyPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{safetyAudit}},
		Subscribe: &server.SubjectPermission{Allow: []string{safetyCheck}},
		Response:  allowResponses(),
	}
}

// AuditorPermissions: read the safety kernel's audit records, publish
// nothing.
func AuditorPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Deny: []string{">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{safetyAudit}},
	}
}

// WorkerPermissions: the worker whose id (and NATS user) is workerID takes
// jobs on its topics and cancellations on sys.worker.<id>.>, answers the
// dispatches it received (responses only: it cannot answer another's), and
// publishes heartbeats and results on the subjects that name it and no
// other (pkg/worker's NamedSubjects). It reads inputs from and writes
// results to the blob store (BlobPermissions), its answers under its own
// inbox, _INBOX.<id>.
func WorkerPermissions(workerID string, topics ...string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append([]string{
			"sys.heartbeat.*." + workerID, subjectResult + "." + workerID,
		}, BlobPermissions()...)},
		Subscribe: &server.SubjectPermission{Allow: append(append([]string(nil), topics...), "sys.worker."+workerID+".>", InboxSubjects(workerID))},
		Response:  allowResponses(),
	}
}

// allowResponses is the server's allow_responses: true (one answer per
// request received, within two minutes).
func allowResponses() *server.ResponsePermission {
	return &server.ResponsePermission{MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
}

// Role names.
const (
	RoleClient    = "client"
	RoleScheduler = "scheduler"
	RoleSafety    = "safety"
	RoleAuditor   = "auditor"
	RoleWorker    = "worker"
)

// DevUser is a generated user of a role.
type DevUser struct {
	Role, User, Password string
	// Tenant a client is bound to ("" for the administrator).
	Tenant string
}

// Credentials are the user's bus credentials.
func (u DevUser) Credentials() bus.Credentials {
	return bus.Credentials{User: u.User, Password: u.Password}
}

// DevAuth is a set of users, one per role and one per worker, with random
// passwords: what `cortex dev --auth` runs with.
type DevAuth struct {
	// Client is the administrator's client: it sees every tenant's jobs.
	Client DevUser
	// Tenants are clients bound to a tenant each (tenant-a to a, tenant-b
	// to b): each sees its own tenant's jobs only.
	Tenants                    []DevUser
	Scheduler, Safety, Auditor DevUser
	Workers                    []DevUser
	// Topics the workers take jobs on.
	Topics []string
	// Outside are workers for processes started outside cortex dev
	// (worker-1, worker-2): the worker role, on every job topic (job.>),
	// kept out of Users so that those stay config/nats-auth.conf's users.
	Outside []DevUser
	// Code is the job.code.python worker cortex dev runs when the sandbox
	// works (code-python-1, on CodeTopic), kept out of Users like Outside.
	Code DevUser
}

// CodeTopic is the topic of cortex dev's sandboxed Python worker.
const CodeTopic = "job.code.python"

// OutsideTopics are the topics an outside dev worker may take jobs on.
const OutsideTopics = "job.>"

// outsideWorkers is how many outside workers NewDevAuth makes.
const outsideWorkers = 2

// The dev tenants: user tenant-a is bound to tenant a, tenant-b to b.
var devTenants = [][2]string{{"tenant-a", "a"}, {"tenant-b", "b"}}

// NewDevAuth generates the users: client (the administrator), tenant-a and
// tenant-b (bound to tenants a and b), scheduler, safety, auditor,
// workers named workerPrefix-1 ... -n, each taking jobs on topics, and the
// outside workers worker-1 and worker-2, each with a random 24-character
// password.
func NewDevAuth(workers int, workerPrefix string, topics ...string) (*DevAuth, error) {
	a := &DevAuth{Topics: topics}
	var err error
	user := func(role, name string) DevUser {
		if err != nil {
			return DevUser{}
		}
		var pw string
		pw, err = randomPassword()
		return DevUser{Role: role, User: name, Password: pw}
	}
	a.Client = user(RoleClient, "client")
	for _, t := range devTenants {
		u := user(RoleClient, t[0])
		u.Tenant = t[1]
		a.Tenants = append(a.Tenants, u)
	}
	a.Scheduler = user(RoleScheduler, "scheduler")
	a.Safety = user(RoleSafety, "safety")
	a.Auditor = user(RoleAuditor, "auditor")
	for i := range workers {
		a.Workers = append(a.Workers, user(RoleWorker, fmt.Sprintf("%s-%d", workerPrefix, i+1)))
	}
	for i := range outsideWorkers {
		a.Outside = append(a.Outside, user(RoleWorker, fmt.Sprintf("worker-%d", i+1)))
	}
	a.Code = user(RoleWorker, "code-python-1")
	if err != nil {
		return nil, fmt.Errorf("embeddednats: generating passwords: %w", err)
	}
	return a, nil
}

// Users are the server's users, with their role's permissions.
func (a *DevAuth) Users() []*server.User {
	users := []*server.User{
		{Username: a.Client.User, Password: a.Client.Password, Permissions: ClientPermissions(a.Client.User)},
	}
	for _, c := range a.Tenants {
		users = append(users, &server.User{Username: c.User, Password: c.Password, Permissions: TenantClientPermissions(c.User, c.Tenant)})
	}
	users = append(users, []*server.User{
		{Username: a.Scheduler.User, Password: a.Scheduler.Password, Permissions: SchedulerPermissions(a.Scheduler.User)},
		{Username: a.Safety.User, Password: a.Safety.Password, Permissions: SafetyPermissions()},
		{Username: a.Auditor.User, Password: a.Auditor.Password, Permissions: AuditorPermissions()},
	}...)
	for _, w := range a.Workers {
		users = append(users, &server.User{Username: w.User, Password: w.Password, Permissions: WorkerPermissions(w.User, a.Topics...)})
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Username < users[j].Username })
	return users
}

// OutsideUsers are the server's users for the workers beside cortex dev's
// echo workers: the outside workers (the worker role, taking jobs on
// OutsideTopics) and the sandboxed Python worker (on CodeTopic).
func (a *DevAuth) OutsideUsers() []*server.User {
	users := make([]*server.User, 0, len(a.Outside))
	for _, w := range a.Outside {
		users = append(users, &server.User{Username: w.User, Password: w.Password, Permissions: WorkerPermissions(w.User, OutsideTopics)})
	}
	return append(users, &server.User{Username: a.Code.User, Password: a.Code.Password, Permissions: WorkerPermissions(a.Code.User, CodeTopic)})
}

// randomPassword is 24 characters of [a-z2-7] (120 bits).
func randomPassword() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[b[i]%32]
	}
	return string(b), nil
}

// Clients is the scheduler's clients section for these users: identities
// required, the client an administrator, each tenant's client bound to its
// tenant.
func (a *DevAuth) Clients() tenancy.Config {
	cfg := tenancy.Config{RequireIdentity: true, Identities: map[string]tenancy.Binding{a.Client.User: {Admin: true}}}
	for _, c := range a.Tenants {
		cfg.Identities[c.User] = tenancy.Binding{Tenant: c.Tenant}
	}
	return cfg
}

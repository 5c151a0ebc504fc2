package wire

import (
	"strings"
	"time"
	"unicode"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Job events. A scheduler publishes each change it writes to a job on
// JobEventSubject(tenant, job_id), as a BusPacket carrying a JobAnswer{ok,
// jobs: [the job]}: sys.job.event.<tenant>.<job_id>, with NoTenantToken for
// a job of no tenant. The server's permissions can then give each tenant's
// client the events of its own tenant only (sys.job.event.<tenant>.>).
const (
	// SubjectJobEvents matches every job event.
	SubjectJobEvents = "sys.job.event.>"
	// JobEventPrefix starts every job event subject.
	JobEventPrefix = "sys.job.event."
	// NoTenantToken stands for "no tenant" in a job event subject.
	NoTenantToken = "_"
)

// JobEventSubject is the subject of the events of job jobID of tenant
// ("" for none), and whether there is one: a tenant that is not one
// subject token (a '.', '*', '>', blank or control character), or is
// NoTenantToken itself, has none, since its subject could fall under
// another tenant's; nor has a job id that is not a valid subject.
func JobEventSubject(tenant, jobID string) (string, bool) {
	if !jobEventSubjectOK(tenant, jobID) {
		return "", false
	}
	return JobEventPrefix + tenantToken(tenant) + "." + jobID, true
}

// AppendJobEventSubject is JobEventSubject appending to dst: for a
// publisher that reuses the subject's bytes.
func AppendJobEventSubject(dst []byte, tenant, jobID string) ([]byte, bool) {
	if !jobEventSubjectOK(tenant, jobID) {
		return dst, false
	}
	dst = append(dst, JobEventPrefix...)
	dst = append(dst, tenantToken(tenant)...)
	dst = append(dst, '.')
	return append(dst, jobID...), true
}

func jobEventSubjectOK(tenant, jobID string) bool {
	if tenant != "" && (tenant == NoTenantToken || !subjectToken(tenant)) {
		return false
	}
	return jobID != "" && literalSubject(jobID)
}

func tenantToken(tenant string) string {
	if tenant == "" {
		return NoTenantToken
	}
	return tenant
}

// JobEventsOf is the subject matching the events of job jobID whatever its
// tenant (sys.job.event.*.<job_id>), for a client that may read them all.
func JobEventsOf(jobID string) string { return JobEventPrefix + "*." + jobID }

// TenantJobEvents is the subject matching every event of tenant's jobs
// ("" : the jobs of no tenant): what a tenant's client may subscribe to.
func TenantJobEvents(tenant string) string {
	if tenant == "" {
		tenant = NoTenantToken
	}
	return JobEventPrefix + tenant + ".>"
}

func subjectToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return !strings.ContainsRune(s, unicode.ReplacementChar)
}

// Following jobs. A scheduler publishes a job's events only while someone
// follows it: a follower announces itself on SubjectJobFollow with a
// BusPacket carrying a JobQuery (FollowPacket) whose job_id names the job,
// or is empty to follow every job, and announces again every
// FollowInterval while it follows. Each announcement lasts FollowTTL. Every
// scheduler replica hears every announcement (no queue group): any of them
// may write the job.
const (
	// SubjectJobFollow is where followers announce themselves.
	SubjectJobFollow = "sys.job.follow"
	// FollowTTL is how long an announcement lasts.
	FollowTTL = 30 * time.Second
	// FollowInterval is how often a follower announces itself again:
	// a third of FollowTTL, so that one lost announcement ends no follow.
	FollowInterval = FollowTTL / 3
)

// FollowPacket is the announcement that senderID follows job jobID, or
// every job when jobID is "".
func FollowPacket(senderID, jobID string) *pb.BusPacket {
	p := NewPacket("", senderID)
	p.Payload = &pb.BusPacket_JobQuery{JobQuery: &pb.JobQuery{JobId: jobID}}
	return p
}

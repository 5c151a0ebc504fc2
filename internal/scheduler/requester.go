package scheduler

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/pkg/wire"
)

// Who sent a request, and where the answer may go (docs/security.md,
// "Client identity and tenants").
//
// Core NATS does not tell a subscriber who published, so a client's
// identity U travels in the subject (sys.job.submit.U, sys.job.query.U,
// sys.job.cancel.U), which the server's permissions let only U's user
// publish on. The reply subject, the Cortex-Reply-To header of a submission
// or the NATS reply of a query or cancel, is the requester's to choose, and
// the scheduler publishes the answer with its own permissions: it answers
// only under the requester's own inbox, _INBOX.U., which only U may read.
// A request that names no identity (the bare subjects) is answered only
// under _INBOX., and not under a configured identity's inbox nor the
// scheduler's own. Anything else is not acted on and not answered.

// Reasons a reply subject is refused.
var (
	errReplyNotInbox   = errors.New("reply subject is not an inbox (_INBOX.<...>, literal)")
	errReplyNotOwn     = errors.New("reply subject is not under the requester's own inbox")
	errReplyOfIdentity = errors.New("reply subject of an anonymous request is a configured identity's inbox")
	errReplyScheduler  = errors.New("reply subject is under the scheduler's own inbox")
)

// requestIdentity returns the identity a request on subject (at or below
// base) names: "" for the bare base. An invalid one is an error.
func requestIdentity(base, subject string) (string, error) {
	id, named, ok := wire.SubjectClient(base, subject)
	if !ok {
		return "", fmt.Errorf("%w: subject %s is not %s[.<identity>]", tenancy.ErrInvalidIdentity, subject, base)
	}
	if !named {
		return "", nil
	}
	if err := tenancy.ValidIdentity(id); err != nil {
		return "", err
	}
	return id, nil
}

// checkReply reports whether a request of identity ("" for anonymous) may
// be answered on reply. ownInbox is the scheduler's own inbox prefix with
// its trailing dot ("" for none to protect); known reports a configured
// identity. An empty reply asks for no answer and is always fine.
func checkReply(identity, reply, ownInbox string, known func(string) bool) error {
	if reply == "" {
		return nil
	}
	if !wire.IsInbox(reply) {
		return errReplyNotInbox
	}
	if ownInbox != "" && strings.HasPrefix(reply, ownInbox) {
		return errReplyScheduler
	}
	if identity != "" {
		if !strings.HasPrefix(reply[len(wire.InboxRoot)+1:], identity+".") {
			return errReplyNotOwn
		}
		return nil
	}
	owner := reply[len(wire.InboxRoot)+1:]
	if i := strings.IndexByte(owner, '.'); i >= 0 {
		owner = owner[:i]
	}
	if known != nil && known(owner) {
		return errReplyOfIdentity
	}
	return nil
}

// requesters tells who sent a request (submission, query, cancel) and
// whether its answer may go where it asks: it resolves the identity its
// subject names through the client policy (Config.Clients), checks the
// reply subject against it, and counts and logs each refusal, at most one
// line a second of each kind. It owns the refusal log limits (replyWarn,
// clientWarn: atomics, no lock). It calls no other part; admission and
// queries call it directly.
type requesters struct {
	clients  *tenancy.Policy // nil: no identities configured
	ownInbox string          // this replica's inbox prefix with its trailing dot ("" when the bus has none of its own): no request is answered there
	log      *slog.Logger
	stats    *counters
	// Refusals are logged at most once a second of each kind.
	replyWarn, clientWarn warnLimit
}

// identify resolves the requester of a request that came on subject (at
// or below base) asking for answers on reply. drop means the request is
// refused and not answered: its subject names no valid identity, or its
// reply subject is not the requester's. Otherwise err, when not nil, is a
// refusal to answer on reply (no identity where one is required, an
// identity bound to nothing). Both are counted and logged.
func (rq *requesters) identify(base, subject, reply string) (p tenancy.Principal, drop bool, err error) {
	if subject == base && reply == "" && rq.clients == nil {
		return tenancy.Principal{}, false, nil // the design document's client: nothing to check
	}
	id, err := requestIdentity(base, subject)
	if err != nil {
		rq.stats.clientsRefused.Add(1)
		rq.warnRefused(&rq.clientWarn, "refused a request whose subject names no valid identity", subject, reply, "", err)
		return p, true, nil
	}
	if err := checkReply(id, reply, rq.ownInbox, rq.clients.Known); err != nil {
		rq.stats.repliesRefused.Add(1)
		rq.warnRefused(&rq.replyWarn, "refused a request: it names a reply subject the requester may not read", subject, reply, id, err)
		return p, true, nil
	}
	p, err = rq.clients.Resolve(id)
	if err != nil {
		rq.stats.clientsRefused.Add(1)
		rq.warnRefused(&rq.clientWarn, "refused a request of a client without a binding", subject, reply, id, err)
		return p, false, err
	}
	return p, false, nil
}

// refuseTenant counts and logs a tenant's client acting for another tenant.
func (rq *requesters) refuseTenant(subject string, err error) {
	rq.stats.clientsRefused.Add(1)
	rq.warnRefused(&rq.clientWarn, "refused a request for another tenant", subject, "", "", err)
}

// warnRefused logs a refusal at warn, at most once per warnInterval per
// kind: a refusal is an attack signal or a misconfiguration, worth a line,
// and a flood of them must not flood the log. The line says how many were
// not logged since the last; the counters count every one.
func (rq *requesters) warnRefused(w *warnLimit, msg, subject, reply, identity string, err error) {
	ok, suppressed := w.allow(time.Now())
	if !ok {
		return
	}
	if len(reply) > 128 {
		reply = reply[:128] + "…"
	}
	rq.log.Warn(msg, "subject", subject, "reply", reply, "identity", identity, "err", err, "not_logged_since_last", suppressed)
}

// warnInterval is the least time between two log lines of one kind of refusal.
const warnInterval = time.Second

// warnLimit lets one line through per warnInterval and counts the others.
type warnLimit struct {
	last       atomic.Int64 // unix nanoseconds of the last line logged
	suppressed atomic.Uint64
}

func (w *warnLimit) allow(now time.Time) (ok bool, suppressed uint64) {
	last := w.last.Load()
	if last != 0 && now.UnixNano()-last < int64(warnInterval) || !w.last.CompareAndSwap(last, now.UnixNano()) {
		w.suppressed.Add(1)
		return false, 0
	}
	return true, w.suppressed.Swap(0)
}

// workerSubjectOK reports whether a worker id, as a job record holds it
// (from the worker's own confirmation), can name a worker in a subject:
// one literal token. The scheduler publishes a cancellation on
// sys.worker.<id>.cancel only then, and logs on log why not otherwise.
func workerSubjectOK(log *slog.Logger, jobID, workerID string) bool {
	if workerID != "" && !strings.ContainsAny(workerID, ".*> \t\r\n") && len(workerID) <= wire.MaxInboxLength {
		return true
	}
	log.Warn("not telling a worker of a cancel: its id cannot name a subject", "job_id", jobID, "worker_id", workerID)
	return false
}

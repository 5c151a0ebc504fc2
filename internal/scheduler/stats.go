package scheduler

import "sync/atomic"

// Stats counts what the engine did. All fields are cumulative.
type Stats struct {
	Submitted      uint64 // job requests received
	Accepted       uint64 // new jobs recorded PENDING
	Rejected       uint64 // invalid requests: no job created
	Denied         uint64 // refused by the safety checker: recorded DENIED
	Duplicates     uint64 // resubmissions of an existing job, answered with it
	Conflicts      uint64 // an existing job_id with different content
	Dispatched     uint64 // dispatches sent
	NoResponders   uint64 // dispatches no worker was subscribed for
	Unconfirmed    uint64 // dispatches no worker confirmed in time
	Unroutable     uint64 // no subject could be picked
	Results        uint64 // results received
	StaleResults   uint64 // results of an attempt that was no longer current: fenced
	LateResults    uint64 // results for jobs already finished: ignored
	Completed      uint64
	Retries        uint64 // attempts sent back to PENDING
	LeasesLost     uint64
	DeadLettered   uint64
	Cancelled      uint64
	Heartbeats     uint64
	Alerts         uint64
	Unknown        uint64 // packets with a payload the engine does not handle
	StoreErrors    uint64
	DispatchErrors uint64
	Throttled      uint64 // submissions refused for now by a throttle rule
	Backpressure   uint64 // submissions refused because their pool's or tenant's queue was full
	// SafetyUnavailable counts safety checks that got no decision (a remote
	// kernel did not answer): the job failed closed.
	SafetyUnavailable uint64
	// IdentityRejected counts heartbeats and results refused because their
	// subject names another worker (or, with RequireWorkerIdentity, none).
	IdentityRejected uint64
	// RepliesRefused counts submissions, queries and cancels that named a
	// reply subject outside the requester's own inbox: not acted on, not
	// answered.
	RepliesRefused uint64
	// ClientsRefused counts requests refused for their requester: a subject
	// that names no valid identity, no identity where Clients requires one,
	// an identity bound to nothing, a tenant's client acting for another
	// tenant.
	ClientsRefused uint64
	// ForeignResults counts results refused because their worker is not
	// the one the attempt was dispatched to or confirmed by.
	ForeignResults uint64
	// UntrustedResults counts results that name no attempt, refused
	// because DocumentWorkers is refuse.
	UntrustedResults uint64
	// InvalidPackets counts heartbeats, results, confirmations, cancels and
	// queries refused because a field is out of its bounds (FieldLimits).
	// Submissions out of bounds count in Rejected.
	InvalidPackets uint64
	// Undeliverable counts jobs failed because they can never be published
	// (wire.ErrUnpublishable: a subject too long or invalid, a packet too
	// large) or were stored with a request out of today's bounds.
	Undeliverable uint64
	// NotYetRecorded counts gets of a job the store did not hold answered
	// "not recorded yet" (retryable), as submissions were still being
	// recorded.
	NotYetRecorded uint64
	// Follows counts the follow announcements heard (wire.SubjectJobFollow),
	// malformed ones excepted (InvalidPackets).
	Follows uint64
	// FollowOverflows counts follow announcements of a job beyond
	// Config.MaxFollows: each followed every job for Config.FollowTTL.
	FollowOverflows uint64
}

// counters are the engine's Stats: every part holds a pointer to the one
// set and counts as it goes, with atomics (no lock); Engine.Stats reads them
// (snapshot). It calls no other part.
type counters struct {
	submitted, accepted, rejected, denied, duplicates, conflicts, dispatched, noResponders,
	unconfirmed, unroutable, results, stale, late, completed, retries, leasesLost, deadLettered,
	cancelled, heartbeats, alerts, unknown, storeErrors, dispatchErrors, throttled, safetyUnavailable, backpressure,
	identityRejected, repliesRefused, clientsRefused, foreignResults, untrustedResults, invalidPackets, undeliverable atomic.Uint64
	notYetRecorded, follows, followOverflows atomic.Uint64
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats { return e.stats.snapshot() }

// snapshot reads the counters, each atomically (not all at one instant).
func (s *counters) snapshot() Stats {
	return Stats{
		Submitted: s.submitted.Load(), Accepted: s.accepted.Load(), Rejected: s.rejected.Load(),
		Denied: s.denied.Load(), Duplicates: s.duplicates.Load(), Conflicts: s.conflicts.Load(),
		Dispatched: s.dispatched.Load(), NoResponders: s.noResponders.Load(), Unconfirmed: s.unconfirmed.Load(),
		Unroutable: s.unroutable.Load(), Results: s.results.Load(), StaleResults: s.stale.Load(),
		LateResults: s.late.Load(), Completed: s.completed.Load(), Retries: s.retries.Load(),
		LeasesLost: s.leasesLost.Load(), DeadLettered: s.deadLettered.Load(), Cancelled: s.cancelled.Load(),
		Heartbeats: s.heartbeats.Load(), Alerts: s.alerts.Load(), Unknown: s.unknown.Load(),
		StoreErrors: s.storeErrors.Load(), DispatchErrors: s.dispatchErrors.Load(),
		Throttled: s.throttled.Load(), SafetyUnavailable: s.safetyUnavailable.Load(), Backpressure: s.backpressure.Load(),
		IdentityRejected: s.identityRejected.Load(), RepliesRefused: s.repliesRefused.Load(), ClientsRefused: s.clientsRefused.Load(),
		ForeignResults:   s.foreignResults.Load(),
		UntrustedResults: s.untrustedResults.Load(), InvalidPackets: s.invalidPackets.Load(),
		Undeliverable:  s.undeliverable.Load(),
		NotYetRecorded: s.notYetRecorded.Load(), Follows: s.follows.Load(), FollowOverflows: s.followOverflows.Load(),
	}
}

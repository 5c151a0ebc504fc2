package scheduler

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/pkg/wire"
)

// FuzzClientRequest feeds the scheduler's check of who sent a request and
// where its answer may go (identify: the identity in the subject, the
// reply subject from the Cortex-Reply-To header or the NATS reply) with
// arbitrary subjects and reply subjects. Whatever it lets through is
// answerable without harm: a reply under _INBOX., literal, under the
// requester's own inbox when it names itself, never under the scheduler's
// own inbox or, for an anonymous request, a configured identity's; and a
// principal that the policy would give that identity. It never panics.
func FuzzClientRequest(f *testing.F) {
	for _, seed := range [][3]string{
		{"sys.job.submit", "sys.job.submit.tenant-a", "_INBOX.tenant-a.abc"},
		{"sys.job.submit", "sys.job.submit.tenant-a", "$JS.API.STREAM.PURGE.KV_CORTEX_JOBS"},
		{"sys.job.submit", "sys.job.submit.tenant-a", "_INBOX.tenant-b.abc"},
		{"sys.job.submit", "sys.job.submit.tenant-a", "_INBOX.tenant-ab.abc"},
		{"sys.job.submit", "sys.job.submit", "_INBOX.anyone.1"},
		{"sys.job.submit", "sys.job.submit", "_INBOX.tenant-a.1"},
		{"sys.job.submit", "sys.job.submit", "_INBOX.sched.1"},
		{"sys.job.submit", "sys.job.submit", ""},
		{"sys.job.submit", "sys.job.submit.a.b", "_INBOX.a.1"},
		{"sys.job.query", "sys.job.query.*", "_INBOX.*.1"},
		{"sys.job.query", "sys.job.query.>", "_INBOX.>"},
		{"sys.job.query", "sys.job.query.stranger", "_INBOX.stranger.1"},
		{"sys.job.cancel", "sys.job.cancel.admin", "_INBOX.admin.1 2"},
		{"sys.job.cancel", "sys.job.cancel.admin", "_INBOX.admin..1"},
		{"sys.job.cancel", "sys.job.cancelx", "_INBOX.x.1"},
		{"sys.job.cancel", "sys.job.cancel.\x00", "_INBOX.\x00.1"},
		{"sys.job.cancel", "sys.job.cancel.é", "_INBOX.é.1"},
	} {
		f.Add(seed[0], seed[1], seed[2], true)
		f.Add(seed[0], seed[1], seed[2], false)
	}
	f.Fuzz(func(t *testing.T, base, subject, reply string, require bool) {
		pol, err := tenancy.New(tenancy.Config{RequireIdentity: require, Identities: map[string]tenancy.Binding{
			"tenant-a": {Tenant: "a"}, "tenant-b": {Tenant: "b"}, "admin": {Admin: true},
		}})
		if err != nil {
			t.Fatal(err)
		}
		var logs logging.Buffer
		e := &Engine{}
		e.requesters = &requesters{clients: pol, log: slog.New(slog.NewTextHandler(&logs, nil)), ownInbox: "_INBOX.sched.", stats: &e.stats}
		who, drop, err := e.requesters.identify(base, subject, reply)
		st := e.Stats()
		if drop || err != nil {
			if st.RepliesRefused+st.ClientsRefused != 1 {
				t.Fatalf("refused (drop %v, %v) but counted %d+%d", drop, err, st.RepliesRefused, st.ClientsRefused)
			}
			if drop && err != nil {
				t.Fatalf("dropped with an error to answer: %v", err)
			}
			return
		}
		if st.RepliesRefused+st.ClientsRefused != 0 {
			t.Fatalf("admitted but counted a refusal: %+v", st)
		}
		id, named, ok := wire.SubjectClient(base, subject)
		if !ok {
			t.Fatalf("admitted %q, which is not at or below %q", subject, base)
		}
		if named {
			if tenancy.ValidIdentity(id) != nil || who.Identity != id {
				t.Fatalf("admitted identity %q as %+v", id, who)
			}
		} else if who.Identity != "" {
			t.Fatalf("an anonymous request resolved to %+v", who)
		}
		if require && !pol.Known(who.Identity) {
			t.Fatalf("require_identity admitted %+v", who)
		}
		if want, _ := pol.Resolve(who.Identity); want != who {
			t.Fatalf("principal %+v, the policy says %+v", who, want)
		}
		if reply == "" {
			return
		}
		if !wire.IsInbox(reply) || strings.HasPrefix(reply, "_INBOX.sched.") {
			t.Fatalf("answers on %q", reply)
		}
		for _, tok := range strings.Split(reply, ".") {
			if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
				t.Fatalf("answers on %q, not a literal subject", reply)
			}
		}
		owner := strings.SplitN(reply, ".", 3)[1]
		if named && !strings.HasPrefix(reply, "_INBOX."+id+".") {
			t.Fatalf("%s answered on %q, not its own inbox", id, reply)
		}
		if !named && pol.Known(owner) {
			t.Fatalf("an anonymous request answered in %s's inbox %q", owner, reply)
		}
	})
}

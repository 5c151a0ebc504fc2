package wire

import "strings"

// Client identity is carried in the subject, as worker identity is: a
// client whose identity (its NATS user) is U submits on sys.job.submit.U,
// asks on sys.job.query.U and cancels on sys.job.cancel.U, and reads its
// answers under its inbox prefix, _INBOX.U. The server's permissions let
// U's user publish on those subjects only, and the scheduler answers U only
// under _INBOX.U. (docs/security.md). The bare subjects (SubjectSubmit,
// SubjectQuery, SubjectCancel) name nobody; a scheduler that requires
// client identity refuses what arrives on them.

// InboxRoot starts every subject the scheduler answers on.
const InboxRoot = "_INBOX"

// ClientSubject is base (SubjectSubmit, SubjectQuery or SubjectCancel) for
// the client identity: base.<identity>, or base itself for no identity.
func ClientSubject(base, identity string) string {
	if identity == "" {
		return base
	}
	return base + "." + identity
}

// SubjectClient returns what a subject at or below base names as its
// client: the rest of base.<identity> (unchecked: it may hold dots or
// wildcards, which the scheduler refuses). The bare base names nobody
// (named is false); a subject not at or below base is not ok.
func SubjectClient(base, subject string) (identity string, named, ok bool) {
	if subject == base {
		return "", false, true
	}
	rest, found := strings.CutPrefix(subject, base)
	if !found || !strings.HasPrefix(rest, ".") {
		return "", false, false
	}
	return rest[1:], true, true
}

// ClientInbox is the inbox prefix of a client identity: _INBOX.<identity>.
func ClientInbox(identity string) string { return InboxRoot + "." + identity }

// IsInbox reports whether subject is a literal subject under _INBOX: at
// least two tokens, none empty or a wildcard, no spaces or control
// characters, at most MaxInboxLength bytes. The scheduler answers nowhere
// else.
func IsInbox(subject string) bool {
	rest, ok := strings.CutPrefix(subject, InboxRoot+".")
	return ok && len(subject) <= MaxInboxLength && literalSubject(rest)
}

// MaxInboxLength bounds a reply subject.
const MaxInboxLength = 512

// literalSubject reports whether s is a subject of non-empty tokens, none a
// wildcard, without spaces or control characters.
func literalSubject(s string) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			c := s[i]
			if c <= ' ' || c == 0x7f {
				return false
			}
			if c != '.' {
				continue
			}
		}
		if tok := s[start:i]; tok == "" || tok == "*" || tok == ">" {
			return false
		}
		start = i + 1
	}
	return true
}

package jobstore

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Paging. A store lists jobs a page at a time, newest first: by revision,
// the most recently written job first. A page token is a position in that
// order (the revision to continue below), not a snapshot: a job written
// after the listing started has a revision above every token handed out, so
// the pages after it do not show it (list again from the first page), and
// it is not shown twice. A job that is not written while the pages are read
// is returned exactly once.
//
// Every page costs bounded work, whatever the store holds and whatever the
// filter: a store examines at most PageQuery.Scan revisions for one page and
// returns what matched among them, so a page may hold fewer than Size jobs
// (even none) and still have a Next token. Filters are applied as the store
// walks its revision index, before anything is copied or decoded for the
// answer.
//
// A token carries only a position, never a filter: the filter (a tenant
// among them) is given again with every page, so a token cannot widen what
// a caller sees.

// Page sizes and scan budgets.
const (
	// DefaultPageSize is the jobs of a page when PageQuery.Size is 0.
	DefaultPageSize = 100
	// MaxPageSize is the most jobs one page holds.
	MaxPageSize = 1000
	// DefaultPageScan is the revisions a store examines for one page when
	// PageQuery.Scan is 0.
	DefaultPageScan = 4096
	// MaxPageScan is the most revisions a store examines for one page.
	MaxPageScan = 16384
)

// ErrBadPageToken is a page token no store handed out: not a token of this
// version, or damaged.
var ErrBadPageToken = errors.New("jobstore: bad page token")

// PageQuery asks for one page of jobs.
type PageQuery struct {
	// Filter selects the jobs (its Limit is ignored: Size bounds a page).
	Filter Filter
	// Token is the Next of the previous page; empty for the first page.
	Token string
	// Size is the most jobs the page holds: 0 means DefaultPageSize, more
	// than MaxPageSize means MaxPageSize.
	Size int
	// Scan is the most revisions the store examines for the page: 0 means
	// DefaultPageScan, more than MaxPageScan means MaxPageScan.
	Scan int
}

// Limits returns q's page size and scan budget, defaults applied.
func (q PageQuery) Limits() (size, scan int) {
	size, scan = q.Size, q.Scan
	if size <= 0 {
		size = DefaultPageSize
	}
	if scan <= 0 {
		scan = DefaultPageScan
	}
	return min(size, MaxPageSize), min(scan, MaxPageScan)
}

// Page is one page of jobs.
type Page struct {
	// Records are the jobs that matched, newest first.
	Records []Record
	// Next is the token of the next page; empty when there are no older
	// revisions to examine.
	Next string
}

// Page tokens: base64url (no padding) of a version byte and the revision
// to continue below, as a uvarint. Short, opaque to callers, and strictly
// checked when read.
const (
	pageTokenVersion = 1
	maxPageTokenLen  = 16 // base64 of 1 + 10 bytes
)

// PageTokenBefore is the token of the page that continues below revision
// rev: its jobs have revisions lower than rev. Nothing is below revision 1:
// for rev 0 or 1 it returns "", no next page.
func PageTokenBefore(rev uint64) string {
	if rev <= 1 {
		return ""
	}
	var b [1 + binary.MaxVarintLen64]byte
	b[0] = pageTokenVersion
	n := binary.PutUvarint(b[1:], rev)
	return base64.RawURLEncoding.EncodeToString(b[:1+n])
}

// DecodePageToken returns the revision a token continues below; 0 for the
// empty token (the first page). Anything but a token PageTokenBefore made is
// an error wrapping ErrBadPageToken.
func DecodePageToken(token string) (before uint64, err error) {
	if token == "" {
		return 0, nil
	}
	if len(token) > maxPageTokenLen {
		return 0, fmt.Errorf("%w: %d characters", ErrBadPageToken, len(token))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil {
		return 0, fmt.Errorf("%w: not base64url", ErrBadPageToken)
	}
	if len(b) < 2 || b[0] != pageTokenVersion {
		return 0, fmt.Errorf("%w: unknown version", ErrBadPageToken)
	}
	rev, n := binary.Uvarint(b[1:])
	if n <= 0 || 1+n != len(b) || rev <= 1 {
		return 0, fmt.Errorf("%w: bad position", ErrBadPageToken)
	}
	// One encoding per revision: refuse a padded varint (a second token
	// for the same position).
	if PageTokenBefore(rev) != token {
		return 0, fmt.Errorf("%w: not canonical", ErrBadPageToken)
	}
	return rev, nil
}

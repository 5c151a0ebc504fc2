package placement

import (
	"fmt"
	"strings"
)

// MatchSubject reports whether subject, a literal NATS subject, matches
// pattern, a NATS subject pattern: "*" matches one token, a final ">" one or
// more. It allocates nothing.
func MatchSubject(pattern, subject string) bool {
	for {
		pt, prest, pmore := strings.Cut(pattern, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case pt == ">":
			return st != ""
		case pt != "*" && pt != st:
			return false
		}
		if pmore != smore {
			return false
		}
		if !pmore {
			return true
		}
		pattern, subject = prest, srest
	}
}

// overlap reports whether some literal subject matches both patterns.
func overlap(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">" || bt == ">":
			return true
		case at != "*" && bt != "*" && at != bt:
			return false
		}
		if amore != bmore {
			// One ends here; the other goes on: only a ">" could make
			// up the difference, and it would be this token.
			return false
		}
		if !amore {
			return true
		}
		a, b = arest, brest
	}
}

// isPattern reports whether s has a wildcard token.
func isPattern(s string) bool {
	for rest := s; ; {
		tok, tail, more := strings.Cut(rest, ".")
		if tok == "*" || tok == ">" {
			return true
		}
		if !more {
			return false
		}
		rest = tail
	}
}

// validPattern checks a subject pattern: non-empty tokens without blanks,
// ">" only last.
func validPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty subject")
	}
	for rest := p; ; {
		tok, tail, more := strings.Cut(rest, ".")
		switch {
		case tok == "":
			return fmt.Errorf("subject %q has an empty token", p)
		case strings.ContainsAny(tok, " \t\r\n"):
			return fmt.Errorf("subject %q has a blank in a token", p)
		case tok == ">" && more:
			return fmt.Errorf("subject %q: \">\" must be the last token", p)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("subject %q: a wildcard must be a whole token", p)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

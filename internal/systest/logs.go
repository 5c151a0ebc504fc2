package systest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Attrs are the key=value pairs of a log line as log/slog's text handler
// writes it: time, level, msg and the record's attributes.
type Attrs map[string]string

// ParseAttrs parses the key=value pairs of line, unquoting Go-quoted values
// (the text handler quotes values with spaces, quotes or "="). Words without
// an "=" are skipped, so it also reads lines such as the sender's
// "Sent job job_id=… trace_id=… topic=…".
func ParseAttrs(line string) Attrs {
	attrs := Attrs{}
	s := strings.TrimSpace(line)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			if sp < 0 {
				break
			}
			s = strings.TrimLeft(s[sp:], " ")
			continue
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		switch end := strings.IndexByte(s, ' '); {
		case strings.HasPrefix(s, `"`):
			i := 1
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(s) {
				val, s = s, ""
				break
			}
			quoted := s[:i+1]
			s = s[i+1:]
			if u, err := strconv.Unquote(quoted); err == nil {
				val = u
			} else {
				val = quoted
			}
		case end >= 0:
			val, s = s[:end], s[end:]
		default:
			val, s = s, ""
		}
		attrs[key] = val
		s = strings.TrimLeft(s, " ")
	}
	return attrs
}

// Match reports whether the line's msg contains msg ("" matches any) and its
// attributes have the values of the key, value pairs kv. An empty value
// matches an attribute that is empty or absent.
//
// Match by the words of the message and by attributes, the component
// included ("component", "scheduler"): the binaries' messages are plain,
// and the design document's [SCHEDULER]-style prefixes appear only in
// cortex dev's human text.
func (a Attrs) Match(msg string, kv ...string) bool {
	if len(kv)%2 != 0 {
		panic(fmt.Sprintf("systest: Match: key %q without a value", kv[len(kv)-1]))
	}
	if !strings.Contains(a["msg"], msg) {
		return false
	}
	for i := 0; i < len(kv); i += 2 {
		if a[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// Has reports whether the line has the attribute key.
func (a Attrs) Has(key string) bool {
	_, ok := a[key]
	return ok
}

// Time is the line's time attribute.
func (a Attrs) Time() (time.Time, error) {
	return time.Parse(time.RFC3339Nano, a["time"])
}

// Lines are the complete lines of text: those that end in a newline.
func Lines(text string) []string {
	i := strings.LastIndexByte(text, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(text[:i], "\n")
}

// FindLogs returns the attributes of every complete line of text that
// matches msg and kv as in [Attrs.Match], in order.
func FindLogs(text, msg string, kv ...string) []Attrs {
	return findLogs(Lines(text), msg, kv...)
}

func findLogs(lines []string, msg string, kv ...string) []Attrs {
	// A line whose msg contains msg contains it as written, unless msg has
	// characters the handler escapes when it quotes: skip the others unparsed.
	quoted := strconv.Quote(msg)
	plain := quoted[1:len(quoted)-1] == msg
	var found []Attrs
	for _, line := range lines {
		if plain && !strings.Contains(line, msg) {
			continue
		}
		if a := ParseAttrs(line); a.Match(msg, kv...) {
			found = append(found, a)
		}
	}
	return found
}

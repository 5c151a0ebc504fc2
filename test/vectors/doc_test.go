package vectors

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docHex reads the hex of a packet dump of docs/protocol.md: on each line,
// the text before the first run of two or more spaces, its spaces removed.
// A "…" stands for bytes left out.
func docHex(block string) string {
	var b strings.Builder
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "  "); i >= 0 {
			line = line[:i]
		}
		b.WriteString(strings.ReplaceAll(line, " ", ""))
	}
	return b.String()
}

var (
	docDump   = regexp.MustCompile("(?s)\\*\\*`([a-z0-9_]+)\\.bin`\\*\\*.*?```\n(.*?)```")
	docReject = regexp.MustCompile("(?m)^\\| `(reject_[a-z0-9_]+)\\.bin` \\| (?:`([0-9a-f ]*)`|\\(none\\)) \\|")
)

// TestProtocolDocMatchesTheVectors: the packets docs/protocol.md shows byte
// for byte are the files of this directory, so the page another team
// implements from cannot drift from what both SDKs are tested against.
func TestProtocolDocMatchesTheVectors(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name, shown string) {
		t.Helper()
		bin, err := os.ReadFile(name + ".bin")
		if err != nil {
			t.Errorf("docs/protocol.md shows %s.bin: %v", name, err)
			return
		}
		actual := hex.EncodeToString(bin)
		ok := shown == actual
		if head, tail, cut := strings.Cut(shown, "…"); cut {
			ok = len(actual) >= len(head)+len(tail) && strings.HasPrefix(actual, head) && strings.HasSuffix(actual, tail)
		}
		if !ok {
			t.Errorf("docs/protocol.md shows %s.bin as\n%s\nthe file is\n%s", name, shown, actual)
		}
	}
	dumps := docDump.FindAllStringSubmatch(string(doc), -1)
	if len(dumps) < 3 {
		t.Fatalf("found %d packet dumps in docs/protocol.md, want at least 3", len(dumps))
	}
	for _, m := range dumps {
		check(m[1], docHex(m[2]))
	}
	rows := docReject.FindAllStringSubmatch(string(doc), -1)
	if len(rows) != len(rejects) {
		t.Fatalf("docs/protocol.md lists %d rejected packets, this test %d", len(rows), len(rejects))
	}
	for _, m := range rows {
		check(m[1], strings.ReplaceAll(m[2], " ", ""))
	}
}

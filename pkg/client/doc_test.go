package client_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every Go snippet of docs/sdk-go.md is part of a compiled example or test:
// of the SDK's packages (pkg/...), or of the outside module test/e2e builds.
// Lines are compared without their indentation, and blank lines are
// skipped, so a snippet may be indented as the page likes.
func TestSDKDocSnippetsAreCompiled(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "sdk-go.md"))
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, dir := range []string{"pkg", filepath.Join("test", "e2e", "testdata", "outside")} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if strings.HasSuffix(path, "_test.go") || (dir != "pkg" && strings.HasSuffix(path, ".go")) {
				src, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				sources = append(sources, normalize(string(src)))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	snippets := goBlocks(string(doc))
	if len(snippets) < 10 {
		t.Fatalf("found %d Go snippets in docs/sdk-go.md; the page has more", len(snippets))
	}
	for i, s := range snippets {
		want := normalize(s)
		found := false
		for _, src := range sources {
			if strings.Contains("\n"+src+"\n", "\n"+want+"\n") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("snippet %d of docs/sdk-go.md is in no example or test:\n%s", i+1, s)
		}
	}
}

// goBlocks returns the bodies of the ```go blocks of a Markdown page.
func goBlocks(md string) []string {
	var (
		blocks []string
		cur    []string
		in     bool
	)
	for line := range strings.Lines(md) {
		line = strings.TrimRight(line, "\n")
		switch {
		case !in && strings.TrimSpace(line) == "```go":
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

// normalize trims every line and drops the blank ones.
func normalize(s string) string {
	var out []string
	for line := range strings.Lines(s) {
		if l := strings.TrimSpace(line); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/systest"
)

// baseThing is the baseline for the breaking tests; line numbers matter for
// the position assertions below.
const baseThing = `syntax = "proto3";
package cortex.v1;
option go_package = "example.com/x/pb/v1";
import "api/proto/v1/other.proto";
enum Color {
  COLOR_UNSPECIFIED = 0;
  COLOR_RED = 1;
  COLOR_BLUE = 2;
  reserved 5;
  reserved "COLOR_OLD";
}

enum Mood { MOOD_UNSPECIFIED = 0; }

message Thing {
  string id = 1;
  Color color = 2;
  repeated string tags = 3;
  map<string, int32> counts = 4;
  optional int64 size = 5;
  oneof payload {
    string text = 6;
    bytes blob = 7;
  }
  Other other = 8;
  reserved 10, 20 to 25;
  reserved "legacy";
  message Inner { string v = 1; }
}
`

const baseOther = `syntax = "proto3";
package cortex.v1;
option go_package = "example.com/x/pb/v1";

message Other { string v = 1; }
`

const baseExtra = `syntax = "proto3";
package cortex.v1;
option go_package = "example.com/x/pb/v1";
import "api/proto/v1/thing.proto";

message Extra { Thing thing = 1; }
`

// writeTree writes files into dir/api/proto/v1 and returns dir.
func writeTree(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	protos := filepath.Join(dir, filepath.FromSlash(protoDir))
	if err := os.MkdirAll(protos, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(protos, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func baseFiles() map[string]string {
	return map[string]string{"thing.proto": baseThing, "other.proto": baseOther, "extra.proto": baseExtra}
}

// edit returns the baseline with old/new pairs replaced in thing.proto.
func edit(pairs ...string) map[string]string {
	return editFile(baseFiles(), "thing.proto", pairs...)
}

func editFile(files map[string]string, name string, pairs ...string) map[string]string {
	src := files[name]
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(src, pairs[i]) {
			panic("edit: " + pairs[i] + " not in " + name)
		}
		src = strings.Replace(src, pairs[i], pairs[i+1], 1)
	}
	files[name] = src
	return files
}

func TestBreaking(t *testing.T) {
	t.Parallel()
	withoutExtra := baseFiles()
	delete(withoutExtra, "extra.proto")
	additions := edit(
		"COLOR_BLUE = 2;", "COLOR_BLUE = 2;\n  COLOR_GREEN = 3;",
		"Other other = 8;", "Other other = 8;\n  string note = 9;\n  repeated Inner inners = 30;",
		"message Inner {", "message Deeper { int32 n = 1; }\n  message Inner {",
	)
	additions["thing.proto"] += "message Brand { string name = 1; }\nenum Size { SIZE_UNSPECIFIED = 0; }\n"
	additions["new.proto"] = "syntax = \"proto3\";\npackage cortex.v1;\nmessage Fresh {}\n"

	tests := []struct {
		name    string
		current map[string]string
		want    []string // each must match a distinct finding; no others allowed
	}{
		{"unchanged", baseFiles(), nil},
		{"pure additions", additions, nil},
		{"field deleted but number reserved", edit("string id = 1;", "reserved 1;"), nil},
		{"enum value deleted but number reserved", edit("COLOR_BLUE = 2;", "reserved 2;"), nil},
		{"reserved ranges merged", edit("reserved 10, 20 to 25;", "reserved 10, 11, 19 to 30;"), nil},

		{"renumbered field", edit("string id = 1;", "string id = 9;"), []string{
			`thing.proto:16:3: cortex.v1.Thing: field "id" moved from number 1 to 9`,
			`cortex.v1.Thing: field 1 "id" deleted without reserving its number`,
		}},
		{"field deleted", edit("string id = 1;", ""), []string{
			`baseline/api/proto/v1/thing.proto:16:3: cortex.v1.Thing: field 1 "id" deleted without reserving its number`,
		}},
		{"renamed field", edit("string id = 1;", "string ident = 1;"), []string{
			`thing.proto:16:3: cortex.v1.Thing: field 1 renamed from "id" to "ident"`,
		}},
		{"retyped scalar", edit("string id = 1;", "bytes id = 1;"), []string{
			`field 1 "id" changed type from string to bytes`,
		}},
		{"retyped enum to int", edit("Color color = 2;", "int32 color = 2;"), []string{
			`field 2 "color" changed type from cortex.v1.Color to int32`,
		}},
		{"retyped message", edit("Other other = 8;", "Inner other = 8;"), []string{
			`field 8 "other" changed type from cortex.v1.Other to cortex.v1.Thing.Inner`,
		}},
		{"retyped map value", edit("map<string, int32> counts", "map<string, int64> counts"), []string{
			`field 4 "counts" changed type from map<string, int32> to map<string, int64>`,
		}},
		{"repeated to singular", edit("repeated string tags = 3;", "string tags = 3;"), []string{
			`field 3 "tags" changed cardinality from repeated to singular`,
		}},
		{"optional dropped", edit("optional int64 size = 5;", "int64 size = 5;"), []string{
			`field 5 "size" changed cardinality from optional to singular`,
		}},
		{"map to repeated", edit("map<string, int32> counts = 4;", "repeated string counts = 4;"), []string{
			`field 4 "counts" changed type from map<string, int32> to string`,
			`field 4 "counts" changed cardinality from map to repeated`,
		}},
		{"field left oneof", edit("bytes blob = 7;\n  }", "}\n  bytes blob = 7;"), []string{
			`field 7 "blob" changed oneof from oneof payload to none`,
		}},
		{"number unreserved", edit("reserved 10, 20 to 25;", "reserved 10, 20 to 22;"), []string{
			`thing.proto:15:1: cortex.v1.Thing: reserved number(s) 23 to 25 no longer reserved`,
		}},
		{"reserved number reused", edit("reserved 10, 20 to 25;", "reserved 20 to 25;\n  string ten = 10;"), []string{
			`cortex.v1.Thing: reserved number(s) 10 no longer reserved`,
			`thing.proto:27:3: cortex.v1.Thing: reserved number 10 now used by ten`,
		}},
		{"name unreserved", edit(`reserved "legacy";`, ""), []string{
			`cortex.v1.Thing: reserved name "legacy" no longer reserved`,
		}},
		{"reserved name reused", edit(`reserved "legacy";`, "string legacy = 11;"), []string{
			`cortex.v1.Thing: reserved name "legacy" no longer reserved`,
			`thing.proto:27:3: cortex.v1.Thing: reserved name "legacy" now used by number 11`,
		}},
		{"field name reused with new number", edit("string id = 1;", "reserved 1;\n  string id = 12;"), []string{
			`field "id" moved from number 1 to 12`,
		}},
		{"nested message removed", edit("message Inner { string v = 1; }", ""), []string{
			`baseline/api/proto/v1/thing.proto:28:3: cortex.v1.Thing.Inner: message removed`,
		}},
		{"message renamed", edit("message Inner {", "message Innards {"), []string{
			`cortex.v1.Thing.Inner: message removed`,
		}},
		{"enum removed", edit("enum Mood { MOOD_UNSPECIFIED = 0; }", ""), []string{
			`thing.proto:13:1: cortex.v1.Mood: enum removed`,
		}},
		{"enum value removed", edit("COLOR_BLUE = 2;", ""), []string{
			`cortex.v1.Color: enum value 2 COLOR_BLUE deleted without reserving its number`,
		}},
		{"enum value renamed", edit("COLOR_BLUE = 2;", "COLOR_AZURE = 2;"), []string{
			`thing.proto:8:3: cortex.v1.Color: enum value 2 renamed from COLOR_BLUE to COLOR_AZURE`,
		}},
		{"enum values swapped", edit("COLOR_RED = 1;\n  COLOR_BLUE = 2;", "COLOR_RED = 2;\n  COLOR_BLUE = 1;"), []string{
			`enum value COLOR_RED moved from number 1 to 2`,
			`enum value COLOR_BLUE moved from number 2 to 1`,
		}},
		{"enum number unreserved", edit("reserved 5;", ""), []string{
			`cortex.v1.Color: reserved number(s) 5 no longer reserved`,
		}},
		{"enum name unreserved", edit(`reserved "COLOR_OLD";`, `COLOR_OLD = 4;`), []string{
			`cortex.v1.Color: reserved name "COLOR_OLD" no longer reserved`,
			`cortex.v1.Color: reserved name "COLOR_OLD" now used by number 4`,
		}},
		{"go_package changed", edit(`example.com/x/pb/v1`, `example.com/x/pb/v1alpha`), []string{
			`thing.proto:3:1: cortex.v1: go_package of api/proto/v1/thing.proto changed from "example.com/x/pb/v1" to "example.com/x/pb/v1alpha"`,
		}},
		{"package renamed", editFile(edit("Other other = 8;", "cortex.v2.Other other = 8;"),
			"other.proto", "package cortex.v1;", "package cortex.v2;"), []string{
			`other.proto:2:1: cortex.v1: package of api/proto/v1/other.proto renamed from "cortex.v1" to "cortex.v2"`,
			`cortex.v1.Other: message removed`,
			`field 8 "other" changed type from cortex.v1.Other to cortex.v2.Other`,
		}},
		{"package and go_package changed", editFile(edit("Other other = 8;", "cortex.v2.Other other = 8;"),
			"other.proto", "package cortex.v1;", "package cortex.v2;", "pb/v1", "pb/v2"), []string{
			`package of api/proto/v1/other.proto renamed from "cortex.v1" to "cortex.v2"`,
			`go_package of api/proto/v1/other.proto changed from "example.com/x/pb/v1" to "example.com/x/pb/v2"`,
			`cortex.v1.Other: message removed`,
			`field 8 "other" changed type from cortex.v1.Other to cortex.v2.Other`,
		}},
		{"file removed", withoutExtra, []string{
			`cortex.v1: file api/proto/v1/extra.proto removed`,
			`cortex.v1.Extra: message removed`,
		}},
	}
	baseline := writeTree(t, filepath.Join(t.TempDir(), "baseline"), baseFiles())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			findings, err := breakingChanges(baseline, writeTree(t, t.TempDir(), tt.current))
			if err != nil {
				t.Fatal(err)
			}
			assertFindings(t, findings, tt.want)
		})
	}
}

// assertFindings matches each wanted substring to a distinct finding and
// rejects findings nobody asked for.
func assertFindings(t *testing.T, findings []finding, want []string) {
	t.Helper()
	used := make([]bool, len(findings))
next:
	for _, w := range want {
		for i, f := range findings {
			if !used[i] && strings.Contains(f.String(), w) {
				used[i] = true
				continue next
			}
		}
		t.Errorf("missing finding %q", w)
	}
	for i, f := range findings {
		if !used[i] {
			t.Errorf("unexpected finding: %s", f)
		}
	}
}

func TestRepoIsCompatibleWithBaseline(t *testing.T) {
	t.Parallel()
	root := systest.RepoRoot(t)
	findings, err := breakingChanges(filepath.Join(root, "api", "proto", "baseline"), root)
	if err != nil {
		t.Fatal(err)
	}
	assertFindings(t, findings, nil)
}

func TestRepoGeneratedCodeIsFresh(t *testing.T) {
	t.Parallel()
	problems, err := staleFiles(systest.RepoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestStale runs the CLI on a copy of the repo's protos.
func TestStale(t *testing.T) {
	t.Parallel()
	repo := systest.RepoRoot(t)
	files := map[string]string{}
	names, err := protoFiles(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		src, err := os.ReadFile(filepath.Join(repo, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(name)] = string(src)
	}
	root := writeTree(t, t.TempDir(), files)
	pb := filepath.Join(root, "pkg", "pb", "v1")
	cli := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := run(append(args, "--root", root), &out, &out)
		return code, out.String()
	}

	if code, out := cli("stale"); code != exitFail || !strings.Contains(out, "pkg/pb/v1/job.pb.go: missing") {
		t.Fatalf("stale before generate: exit %d\n%s", code, out)
	}
	if code, out := cli("generate", "--out", root); code != exitOK {
		t.Fatalf("generate: exit %d\n%s", code, out)
	}
	if code, out := cli("stale"); code != exitOK {
		t.Fatalf("stale after generate: exit %d\n%s", code, out)
	}

	// Code from real protoc differs only in the version line: still fresh.
	job := filepath.Join(pb, "job.pb.go")
	replaceInFile(t, job, "// \tprotoc        (unknown)", "// \tprotoc        v3.21.12")
	if code, out := cli("stale"); code != exitOK {
		t.Fatalf("stale with protoc version line: exit %d\n%s", code, out)
	}

	// Any other change to a .pb.go or a .proto is reported.
	replaceInFile(t, job, "JobPriority_JOB_PRIORITY_BATCH ", "JobPriority_JOB_PRIORITY_BULK ")
	replaceInFile(t, filepath.Join(root, "api", "proto", "v1", "heartbeat.proto"), "reserved 8, 9, 10;", "string zone = 8;")
	if err := os.WriteFile(filepath.Join(pb, "old.pb.go"), []byte("package v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := cli("stale")
	for _, want := range []string{
		"pkg/pb/v1/job.pb.go: stale",
		"-\tJobPriority_JOB_PRIORITY_BULK ",
		"+\tJobPriority_JOB_PRIORITY_BATCH ",
		"pkg/pb/v1/heartbeat.pb.go: stale",
		"pkg/pb/v1/old.pb.go: extra",
		"run: make proto",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stale output lacks %q", want)
		}
	}
	if code != exitFail || strings.Contains(out, "packet.pb.go") || t.Failed() {
		t.Fatalf("stale: exit %d\n%s", code, out)
	}
}

func replaceInFile(t *testing.T, name, old, new string) {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte(old)) {
		t.Fatalf("%s lacks %q", name, old)
	}
	if err := os.WriteFile(name, bytes.Replace(src, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBreakingCLI(t *testing.T) {
	t.Parallel()
	baseline := writeTree(t, t.TempDir(), baseFiles())
	current := writeTree(t, t.TempDir(), edit("string id = 1;", "int64 id = 1;"))
	var out bytes.Buffer
	code := run([]string{"breaking", "--against", baseline, "--root", current}, &out, &out)
	if code != exitFail || !strings.Contains(out.String(), `field 1 "id" changed type from string to int64`) ||
		!strings.Contains(out.String(), "1 wire-breaking change(s)") {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"breaking", "--against", baseline, "--root", baseline}, &out, &out); code != exitOK {
		t.Fatalf("identical trees: exit %d\n%s", code, out.String())
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "usage: protocheck"},
		{[]string{"--help"}, exitOK, "usage: protocheck"},
		{[]string{"help"}, exitOK, "Commands:"},
		{[]string{"stale", "-h"}, exitOK, "usage: protocheck"},
		{[]string{"bogus"}, exitUsage, `unknown command "bogus"`},
		{[]string{"stale", "--against", "x"}, exitUsage, "flag provided but not defined: -against"},
		{[]string{"generate", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"stale", "--root", "/nonexistent"}, exitFail, "no .proto files in /nonexistent/api/proto/v1"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.code || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, want %d with %q; output:\n%s", tt.args, code, tt.code, tt.want, out.String())
		}
	}
}

func TestDiffHint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, want, got string
		hint            []string // substrings of the hint; nil means no hint
	}{
		{"equal", "a\nb\n", "a\nb\n", nil},
		{"protoc version only", "// \tprotoc-gen-go v1\n// \tprotoc        v3.21.12\nx\n",
			"// \tprotoc-gen-go v1\n// \tprotoc        (unknown)\nx\n", nil},
		{"inserted line", "a\nb\nc\nd\ne\n", "a\nb\nX\nc\nd\ne\n", []string{"@@ -3,0 +3,1 @@", "  +X\n   c"}},
		{"changed line", "a\nb\nc\nd\ne\n", "a\nB\nc\nd\ne\n", []string{"@@ -2,1 +2,1 @@", "  -b\n  +B\n   c"}},
		{"truncated", "a\nb\nc\n", "a\n", []string{"@@ -2,2 +2,0 @@", "  -b\n  -c\n"}},
		{"two hunks", "a\nb\nc\nd\ne\nf\ng\n", "a\nB\nc\nd\ne\nF\ng\n", []string{"  -b\n  +B", "more differences follow"}},
	}
	for _, tt := range tests {
		hint := diffHint(ignoreProtocVersion([]byte(tt.want)), ignoreProtocVersion([]byte(tt.got)))
		if (hint == "") != (tt.hint == nil) {
			t.Errorf("%s: hint = %q", tt.name, hint)
		}
		for _, w := range tt.hint {
			if !strings.Contains(hint, w) {
				t.Errorf("%s: hint lacks %q:\n%s", tt.name, w, hint)
			}
		}
	}
}

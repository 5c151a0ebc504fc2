package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/bufbuild/protocompile/linker"
	"github.com/bufbuild/protocompile/protoutil"
	_ "github.com/planetscale/vtprotobuf/features/marshal"
	_ "github.com/planetscale/vtprotobuf/features/size"
	_ "github.com/planetscale/vtprotobuf/features/unmarshal"
	vtgen "github.com/planetscale/vtprotobuf/generator"
	gengo "google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// goModule is passed to protoc-gen-go as module=..., so output paths are
// relative to the repository root (pkg/pb/v1/x.pb.go).
const goModule = "github.com/cortex-os/core"

// generateRoot compiles root/protoDir and returns generated file contents
// keyed by slash-separated path relative to the repository root.
func generateRoot(root string) (map[string][]byte, error) {
	files, err := compileRoot(root)
	if err != nil {
		return nil, err
	}
	return generateGo(files)
}

// vtFeatures are the vtprotobuf features generated next to protoc-gen-go's
// code: reflection-free MarshalVT, UnmarshalVT and SizeVT, which the bus uses
// on its hot path (the wire format is the same), and UnmarshalVTUnsafe, whose
// strings share the bytes decoded (for buffers nothing else holds).
const vtFeatures = "marshal+unmarshal+unmarshal_unsafe+size"

// generateGo runs protoc-gen-go's generator, then protoc-gen-go-vtproto's,
// in-process on a request shaped like the one protoc sends.
func generateGo(files linker.Files) (map[string][]byte, error) {
	req := &pluginpb.CodeGeneratorRequest{
		Parameter: proto.String("module=" + goModule),
		ProtoFile: dependencyOrder(files),
	}
	for _, f := range files {
		req.FileToGenerate = append(req.FileToGenerate, f.Path())
	}
	gen, err := protogen.Options{}.New(req)
	if err != nil {
		return nil, err
	}
	for _, f := range gen.Files {
		if f.Generate {
			gengo.GenerateFile(gen, f)
			generateCheck(gen, f)
		}
	}
	gen.SupportedFeatures = gengo.SupportedFeatures
	gen.SupportedEditionsMinimum = gengo.SupportedEditionsMinimum
	gen.SupportedEditionsMaximum = gengo.SupportedEditionsMaximum
	out := map[string][]byte{}
	if err := collect(gen.Response(), out); err != nil {
		return nil, err
	}

	vtReq := proto.Clone(req).(*pluginpb.CodeGeneratorRequest)
	vtReq.Parameter = proto.String("module=" + goModule + ",features=" + vtFeatures)
	var features string
	vt, err := protogen.Options{ParamFunc: func(name, value string) error {
		if name != "features" {
			return fmt.Errorf("unknown parameter %q", name)
		}
		features = value
		return nil
	}}.New(vtReq)
	if err != nil {
		return nil, err
	}
	cfg := vtgen.Config{Poolable: vtgen.NewObjectSet(), PoolableExclude: vtgen.NewObjectSet()}
	g, err := vtgen.NewGenerator(vt, strings.Split(features, "+"), &cfg)
	if err != nil {
		return nil, err
	}
	g.Generate()
	if err := collect(vt.Response(), out); err != nil {
		return nil, err
	}
	return out, nil
}

func collect(resp *pluginpb.CodeGeneratorResponse, out map[string][]byte) error {
	if resp.Error != nil {
		return errors.New(resp.GetError())
	}
	for _, f := range resp.File {
		out[f.GetName()] = []byte(f.GetContent())
	}
	return nil
}

// dependencyOrder lists the files and everything they import, each file
// after its imports, as protoc does in CodeGeneratorRequest.proto_file.
func dependencyOrder(files linker.Files) []*descriptorpb.FileDescriptorProto {
	var out []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var visit func(protoreflect.FileDescriptor)
	visit = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			visit(imports.Get(i).FileDescriptor)
		}
		out = append(out, protoutil.ProtoFromFileDescriptor(fd))
	}
	for _, f := range files {
		visit(f)
	}
	return out
}

func cmdGenerate(root, outDir string, stdout io.Writer) error {
	generated, err := generateRoot(root)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(generated) {
		dst := filepath.Join(outDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, generated[name], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", dst)
	}
	return nil
}

// staleFiles compares a fresh generation with the files committed under
// root and returns one human-readable problem per stale, missing or extra
// *.pb.go file.
func staleFiles(root string) ([]string, error) {
	generated, err := generateRoot(root)
	if err != nil {
		return nil, err
	}
	var problems []string
	dirs := map[string]bool{}
	for _, name := range sortedKeys(generated) {
		dirs[path.Dir(name)] = true
		committed, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		switch {
		case errors.Is(err, os.ErrNotExist):
			problems = append(problems, name+": missing (not generated yet)")
		case err != nil:
			return nil, err
		default:
			if hint := diffHint(ignoreProtocVersion(committed), ignoreProtocVersion(generated[name])); hint != "" {
				problems = append(problems, name+": stale\n"+hint)
			}
		}
	}
	for dir := range dirs {
		matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*.pb.go"))
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			name := path.Join(dir, filepath.Base(m))
			if _, ok := generated[name]; !ok {
				problems = append(problems, name+": extra (no .proto generates it; delete it)")
			}
		}
	}
	sort.Strings(problems)
	return problems, nil
}

func cmdStale(root string, stdout io.Writer) error {
	problems, err := staleFiles(root)
	if err != nil {
		return err
	}
	if len(problems) == 0 {
		fmt.Fprintln(stdout, "protocheck stale: generated code is up to date")
		return nil
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	fmt.Fprintf(stdout, "\n%d generated file(s) out of date with %s; run: make proto\n", len(problems), protoDir)
	return checkFailed{"stale"}
}

// protocVersionLine matches the header line recording the protoc version
// (right below the protoc-gen-go one), the only line where real protoc and
// this tool differ: "v3.21.12" versus "(unknown)".
var protocVersionLine = regexp.MustCompile(`(?m)^(// \tprotoc-gen-go .*\n)// \tprotoc +.*$`)

// ignoreProtocVersion blanks the protoc version line in the header comment.
func ignoreProtocVersion(src []byte) []byte {
	loc := protocVersionLine.FindSubmatchIndex(src)
	if loc == nil {
		return src
	}
	return slices.Concat(src[:loc[3]], []byte("// \tprotoc        (ignored)"), src[loc[1]:])
}

// diffHint returns "" for equal inputs, else the first differing hunk in
// unified-diff style, which is enough to see what went stale.
func diffHint(want, got []byte) string {
	if bytes.Equal(want, got) {
		return ""
	}
	a := strings.Split(string(want), "\n")
	b := strings.Split(string(got), "\n")
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	da, db := resync(a[pre:], b[pre:])
	const context, maxLines = 2, 8
	var sb strings.Builder
	fmt.Fprintf(&sb, "  @@ -%d,%d +%d,%d @@ (- committed, + generated)\n", pre+1, da, pre+1, db)
	for _, l := range a[max(0, pre-context):pre] {
		fmt.Fprintf(&sb, "   %s\n", l)
	}
	for _, side := range []struct {
		sign  string
		lines []string
	}{{"-", a[pre : pre+da]}, {"+", b[pre : pre+db]}} {
		for i, l := range side.lines {
			if i == maxLines {
				fmt.Fprintf(&sb, "  %s ... (%d more lines)\n", side.sign, len(side.lines)-maxLines)
				break
			}
			fmt.Fprintf(&sb, "  %s%s\n", side.sign, l)
		}
	}
	for _, l := range a[pre+da : min(len(a), pre+da+context)] {
		fmt.Fprintf(&sb, "   %s\n", l)
	}
	if !slices.Equal(a[pre+da:], b[pre+db:]) {
		sb.WriteString("  ... (more differences follow)\n")
	}
	return strings.TrimRight(sb.String(), "\n")
}

// resync finds the shortest edit (drop da lines of a, db lines of b) after
// which a and b agree again for a few lines, searching a bounded window.
func resync(a, b []string) (da, db int) {
	const window, agree = 200, 3
	for d := 0; d <= window; d++ {
		for i := 0; i <= d; i++ {
			j := d - i
			if i > len(a) || j > len(b) {
				continue
			}
			n := min(agree, len(a)-i, len(b)-j)
			if (n > 0 || (i == len(a) && j == len(b))) && slices.Equal(a[i:i+n], b[j:j+n]) {
				return i, j
			}
		}
	}
	return len(a), len(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

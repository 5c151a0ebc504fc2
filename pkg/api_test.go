// Package pkg_test holds the checks on the public Go API as a whole: the
// packages under pkg/ are what users import, and may name no type of an
// internal package (which users cannot import) in what they export.
package pkg_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// listed is what `go list -export -deps -json` says of a package.
type listed struct {
	ImportPath string
	Export     string
	DepOnly    bool
	GoFiles    []string
	Incomplete bool
	Error      *struct{ Err string }
}

// loadPublic type-checks the packages under pkg/ (from the compiler's export
// data, as `go list -export` builds it) and returns them, with an importer
// that loads any of their dependencies.
func loadPublic(t *testing.T) ([]*types.Package, types.Importer) {
	t.Helper()
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Export,DepOnly,GoFiles,Incomplete,Error", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	exports := map[string]string{}
	var roots []string
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Error != nil || p.Incomplete {
			t.Fatalf("go list: %s: %v", p.ImportPath, p.Error)
		}
		exports[p.ImportPath] = p.Export
		if !p.DepOnly && len(p.GoFiles) > 0 { // not this directory's test-only package
			roots = append(roots, p.ImportPath)
		}
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok || file == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	})
	var pkgs []*types.Package
	for _, path := range roots {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, pkg)
	}
	return pkgs, imp
}

func isInternal(path string) bool {
	return strings.HasPrefix(path, "internal/") || strings.Contains(path, "/internal/") || strings.HasSuffix(path, "/internal")
}

// internalLeaks lists, for each exported name of pkg whose API mentions a
// type of an internal package, where: "Client.Bus: result 0 (*bus.NatsBus)".
// It follows exported constants, variables, functions, types (aliases,
// struct fields, interface methods, methods of the type and its pointer),
// and the unexported types of pkg they lead to, but not into other
// non-internal packages, whose own API is theirs.
func internalLeaks(pkg *types.Package) []string {
	var leaks []string
	seen := map[*types.TypeName]bool{} // the unexported types of pkg walked
	var walk func(where string, t types.Type)
	walk = func(where string, t types.Type) {
		switch t := t.(type) {
		case *types.Alias:
			walk(where, types.Unalias(t))
		case *types.Named:
			obj := t.Obj()
			if obj.Pkg() != nil && isInternal(obj.Pkg().Path()) {
				leaks = append(leaks, fmt.Sprintf("%s (%s)", where, types.TypeString(t, nil)))
				return
			}
			for i := range t.TypeArgs().Len() {
				walk(where+": type argument", t.TypeArgs().At(i))
			}
			if obj.Pkg() != pkg || obj.Exported() || seen[obj] {
				return // another package's API, pkg's own exported type (checked by name), or walked
			}
			seen[obj] = true
			walkType(where, t, walk)
		case *types.Pointer:
			walk(where, t.Elem())
		case *types.Slice:
			walk(where, t.Elem())
		case *types.Array:
			walk(where, t.Elem())
		case *types.Map:
			walk(where, t.Key())
			walk(where, t.Elem())
		case *types.Chan:
			walk(where, t.Elem())
		case *types.Signature:
			for i := range t.Params().Len() {
				walk(fmt.Sprintf("%s: parameter %d", where, i), t.Params().At(i).Type())
			}
			for i := range t.Results().Len() {
				walk(fmt.Sprintf("%s: result %d", where, i), t.Results().At(i).Type())
			}
		case *types.Struct:
			for i := range t.NumFields() {
				if f := t.Field(i); f.Exported() {
					walk(where+"."+f.Name(), f.Type())
				}
			}
		case *types.Interface:
			for i := range t.NumMethods() {
				if m := t.Method(i); m.Exported() {
					walk(where+"."+m.Name(), m.Type())
				}
			}
			for i := range t.NumEmbeddeds() {
				walk(where+": embedded", t.EmbeddedType(i))
			}
		case *types.Union:
			for i := range t.Len() {
				walk(where, t.Term(i).Type())
			}
		case *types.TypeParam:
			walk(where+": constraint", t.Constraint())
		}
	}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		switch obj := obj.(type) {
		case *types.TypeName:
			if named, ok := obj.Type().(*types.Named); ok && !obj.IsAlias() {
				walkType(name, named, walk)
				continue
			}
			walk(name, obj.Type())
		default:
			walk(name, obj.Type())
		}
	}
	return leaks
}

// walkType walks what a named type of the package shows: its underlying
// type, its type parameters' constraints, and its exported methods (of the
// type and of its pointer).
func walkType(where string, t *types.Named, walk func(string, types.Type)) {
	for i := range t.TypeParams().Len() {
		walk(where, t.TypeParams().At(i))
	}
	walk(where, t.Underlying())
	mset := types.NewMethodSet(types.NewPointer(t))
	for i := range mset.Len() {
		if m := mset.At(i).Obj(); m.Exported() {
			walk(where+"."+m.Name(), m.Type())
		}
	}
}

// No exported identifier of a package under pkg/ has a type that mentions
// an internal package: every type a user of the SDK meets, it can name.
func TestPublicAPINamesNoInternalType(t *testing.T) {
	pkgs, _ := loadPublic(t)
	var names []string
	for _, pkg := range pkgs {
		names = append(names, pkg.Path())
		if isInternal(pkg.Path()) {
			t.Errorf("%s is under pkg/ but internal", pkg.Path())
		}
		for _, leak := range internalLeaks(pkg) {
			t.Errorf("%s.%s: an internal type in the public API", pkg.Name(), leak)
		}
	}
	for _, want := range []string{"pkg/client", "pkg/worker", "pkg/workertest", "pkg/wire"} {
		if !slices.ContainsFunc(names, func(p string) bool { return strings.HasSuffix(p, want) }) {
			t.Errorf("%s was not checked (checked %v)", want, names)
		}
	}
}

// The check finds an internal type wherever the API can show one.
func TestInternalLeaksFindsEveryPlace(t *testing.T) {
	_, imp := loadPublic(t)
	const src = `package leaky

import (
	"context"

	"github.com/cortex-os/core/internal/infrastructure/bus"
)

type Client struct {
	Bus  *bus.NatsBus // leak: field
	conf bus.Config   // unexported field: fine
}

func (c *Client) Config() bus.Config      { return c.conf } // leak: method result
func (c *Client) use(b *bus.NatsBus)      {}                 // unexported method: fine
func New(cfg bus.Config) *Client          { return nil }     // leak: parameter
func Open() hidden                        { return hidden{} } // leak: through an unexported type
func Many() map[string][]chan *bus.NatsBus { return nil }     // leak: deep in a type
func Box() Boxed[*bus.NatsBus]            { return Boxed[*bus.NatsBus]{} } // leak: type argument

type hidden struct{ Conn *bus.NatsBus }

type Boxed[T any] struct{ V T }

type Dialer interface {
	Dial(ctx context.Context) (*bus.NatsBus, error) // leak: interface method
}

type Cfg = bus.Config // leak: alias

var Default bus.Credentials // leak: variable

type Embeds struct{ *bus.NatsBus } // leak: embedded field

type Fine struct{ N int }

func (Fine) Context() context.Context { return nil }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "leaky.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	conf := types.Config{Importer: imp}
	pkg, err := conf.Check("example.com/leaky", fset, []*ast.File{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaks := internalLeaks(pkg)
	for _, want := range []string{
		"Client.Bus (", "Client.Config: result 0 (", "New: parameter 0 (", "Open: result 0.Conn (", "Many: result 0 (",
		"Box: result 0: type argument (", "Dialer.Dial: result 0 (", "Cfg (", "Default (", "Embeds.NatsBus (",
	} {
		if !slices.ContainsFunc(leaks, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("no leak reported at %q; reported %q", want, leaks)
		}
	}
	for _, l := range leaks {
		if strings.HasPrefix(l, "Fine") || strings.Contains(l, "use") || strings.Contains(l, "conf") {
			t.Errorf("a false leak: %q", l)
		}
	}
}

// The sender script and the echo worker's handler are written as code in
// another module would be: they import no internal package (their command,
// cmd/cortex-worker-echo, reads the binaries' config file and may).
func TestSDKUsersImportNoInternalPackage(t *testing.T) {
	t.Parallel()
	files := []string{"../tools/scripts/send_echo_job.go"}
	for _, dir := range []string{"../internal/echo"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
				files = append(files, dir+"/"+e.Name())
			}
		}
	}
	fset := token.NewFileSet()
	for _, file := range files {
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if path := strings.Trim(imp.Path.Value, `"`); isInternal(path) {
				t.Errorf("%s imports %s", strings.TrimPrefix(file, "../"), path)
			}
		}
	}
}

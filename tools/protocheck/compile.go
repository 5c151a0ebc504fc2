package main

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"sort"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
)

// protoDir is where the contract lives, relative to a root; it is also the
// import prefix the files use for each other.
const protoDir = "api/proto/v1"

// protoFiles returns the import paths of root/protoDir/*.proto, sorted.
func protoFiles(root string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(protoDir), "*.proto"))
	if err != nil {
		return nil, err
	}
	if len(matches) == 0 {
		return nil, fmt.Errorf("no .proto files in %s", filepath.Join(root, protoDir))
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = path.Join(protoDir, filepath.Base(m))
	}
	sort.Strings(names)
	return names, nil
}

// compileRoot compiles every file in root/protoDir with root as the only
// import path (like protoc -I root) plus the well-known types.
func compileRoot(root string) (linker.Files, error) {
	names, err := protoFiles(root)
	if err != nil {
		return nil, err
	}
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{root},
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := c.Compile(context.Background(), names...)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", root, err)
	}
	return files, nil
}

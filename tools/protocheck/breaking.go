package main

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// finding is one wire-breaking change.
type finding struct {
	pos     string // file:line:col of the offending element ("" if unknown)
	subject protoreflect.FullName
	msg     string
}

func (f finding) String() string {
	s := string(f.subject) + ": " + f.msg
	if f.pos != "" {
		s = f.pos + ": " + s
	}
	return s
}

func cmdBreaking(root, against string, stdout io.Writer) error {
	findings, err := breakingChanges(against, root)
	if err != nil {
		return err
	}
	if len(findings) == 0 {
		fmt.Fprintf(stdout, "protocheck breaking: %s is wire compatible with %s\n", protoDir, against)
		return nil
	}
	for _, f := range findings {
		fmt.Fprintln(stdout, f)
	}
	fmt.Fprintf(stdout, "\n%d wire-breaking change(s) in %s against %s\n", len(findings), protoDir, against)
	return checkFailed{"breaking"}
}

// breakingChanges compiles both trees and compares them.
func breakingChanges(baseRoot, curRoot string) ([]finding, error) {
	base, err := compileRoot(baseRoot)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	cur, err := compileRoot(curRoot)
	if err != nil {
		return nil, err
	}
	c := &comparer{baseRoot: baseRoot, curRoot: curRoot, cur: indexFiles(cur)}
	c.compareFiles(base, cur)
	return c.findings, nil
}

// comparer accumulates findings, in declaration order, while walking the
// baseline set.
type comparer struct {
	baseRoot, curRoot string
	cur               map[protoreflect.FullName]protoreflect.Descriptor
	findings          []finding
}

// indexFiles maps every message and enum (nested ones too) by full name.
func indexFiles(files linker.Files) map[protoreflect.FullName]protoreflect.Descriptor {
	idx := map[protoreflect.FullName]protoreflect.Descriptor{}
	for _, f := range files {
		walkTypes(f.Messages(), f.Enums(), func(d protoreflect.Descriptor) { idx[d.FullName()] = d })
	}
	return idx
}

func walkTypes(msgs protoreflect.MessageDescriptors, enums protoreflect.EnumDescriptors, fn func(protoreflect.Descriptor)) {
	for i := 0; i < enums.Len(); i++ {
		fn(enums.Get(i))
	}
	for i := 0; i < msgs.Len(); i++ {
		m := msgs.Get(i)
		if m.IsMapEntry() { // checked through the map field's type
			continue
		}
		fn(m)
		walkTypes(m.Messages(), m.Enums(), fn)
	}
}

// report records a finding at the source position of d, which lives in the
// baseline tree (base=true) or in the current one.
func (c *comparer) report(d protoreflect.Descriptor, base bool, subject protoreflect.FullName, format string, args ...any) {
	file := d.ParentFile()
	c.reportAt(file, file.SourceLocations().ByDescriptor(d), base, subject, format, args...)
}

// reportFile records a finding at a file-level element such as the package
// statement (source path 2) or the go_package option (8, 11).
func (c *comparer) reportFile(file protoreflect.FileDescriptor, path protoreflect.SourcePath, base bool, subject protoreflect.FullName, format string, args ...any) {
	c.reportAt(file, file.SourceLocations().ByPath(path), base, subject, format, args...)
}

func (c *comparer) reportAt(file protoreflect.FileDescriptor, loc protoreflect.SourceLocation, base bool, subject protoreflect.FullName, format string, args ...any) {
	root := c.curRoot
	if base {
		root = c.baseRoot
	}
	pos := filepath.Join(root, filepath.FromSlash(file.Path()))
	if loc.Path != nil {
		pos = fmt.Sprintf("%s:%d:%d", pos, loc.StartLine+1, loc.StartColumn+1)
	}
	c.findings = append(c.findings, finding{pos: pos, subject: subject, msg: fmt.Sprintf(format, args...)})
}

// Source paths of file-level elements (see descriptor.proto).
var (
	packagePath   = protoreflect.SourcePath{2}
	goPackagePath = protoreflect.SourcePath{8, 11}
)

func (c *comparer) compareFiles(base, cur linker.Files) {
	for _, bf := range base {
		if cf := cur.FindFileByPath(bf.Path()); cf == nil {
			c.reportFile(bf, packagePath, true, bf.Package(), "file %s removed", bf.Path())
		} else {
			if cf.Package() != bf.Package() {
				c.reportFile(cf, packagePath, false, bf.Package(), "package of %s renamed from %q to %q", bf.Path(), bf.Package(), cf.Package())
			}
			if goPackage(cf) != goPackage(bf) {
				c.reportFile(cf, goPackagePath, false, cf.Package(), "go_package of %s changed from %q to %q", bf.Path(), goPackage(bf), goPackage(cf))
			}
		}
		walkTypes(bf.Messages(), bf.Enums(), func(d protoreflect.Descriptor) {
			switch b := d.(type) {
			case protoreflect.MessageDescriptor:
				if m, ok := c.cur[b.FullName()].(protoreflect.MessageDescriptor); ok {
					c.compareMessage(b, m)
				} else {
					c.report(b, true, b.FullName(), "message removed")
				}
			case protoreflect.EnumDescriptor:
				if e, ok := c.cur[b.FullName()].(protoreflect.EnumDescriptor); ok {
					c.compareEnum(b, e)
				} else {
					c.report(b, true, b.FullName(), "enum removed")
				}
			}
		})
	}
}

func goPackage(f protoreflect.FileDescriptor) string {
	opts, _ := f.Options().(*descriptorpb.FileOptions)
	return opts.GetGoPackage()
}

func (c *comparer) compareMessage(base, cur protoreflect.MessageDescriptor) {
	name := base.FullName()
	for i := 0; i < base.Fields().Len(); i++ {
		bf := base.Fields().Get(i)
		if cf := cur.Fields().ByName(bf.Name()); cf != nil && cf.Number() != bf.Number() {
			c.report(cf, false, name, "field %q moved from number %d to %d", bf.Name(), bf.Number(), cf.Number())
		}
		cf := cur.Fields().ByNumber(bf.Number())
		if cf == nil {
			if !cur.ReservedRanges().Has(bf.Number()) {
				c.report(bf, true, name, "field %d %q deleted without reserving its number", bf.Number(), bf.Name())
			}
			continue
		}
		if cf.Name() != bf.Name() {
			c.report(cf, false, name, "field %d renamed from %q to %q", bf.Number(), bf.Name(), cf.Name())
		}
		if bt, ct := fieldType(bf), fieldType(cf); bt != ct {
			c.report(cf, false, name, "field %d %q changed type from %s to %s", bf.Number(), bf.Name(), bt, ct)
		}
		if bl, cl := fieldLabel(bf), fieldLabel(cf); bl != cl {
			c.report(cf, false, name, "field %d %q changed cardinality from %s to %s", bf.Number(), bf.Name(), bl, cl)
		}
		if bo, co := oneofName(bf), oneofName(cf); bo != co {
			c.report(cf, false, name, "field %d %q changed oneof from %s to %s", bf.Number(), bf.Name(), bo, co)
		}
	}
	c.compareReserved(cur, name, fieldRanges(base.ReservedRanges()), fieldRanges(cur.ReservedRanges()),
		base.ReservedNames(), cur.ReservedNames(), fieldMembers(cur.Fields()))
}

func (c *comparer) compareEnum(base, cur protoreflect.EnumDescriptor) {
	name := base.FullName()
	for i := 0; i < base.Values().Len(); i++ {
		bv := base.Values().Get(i)
		if cv := cur.Values().ByName(bv.Name()); cv != nil && cv.Number() != bv.Number() {
			c.report(cv, false, name, "enum value %s moved from number %d to %d", bv.Name(), bv.Number(), cv.Number())
		}
		cv := cur.Values().ByNumber(bv.Number())
		switch {
		case cv == nil && !cur.ReservedRanges().Has(bv.Number()):
			c.report(bv, true, name, "enum value %d %s deleted without reserving its number", bv.Number(), bv.Name())
		case cv != nil && cv.Name() != bv.Name() && cur.Values().ByName(bv.Name()) == nil:
			c.report(cv, false, name, "enum value %d renamed from %s to %s", bv.Number(), bv.Name(), cv.Name())
		}
	}
	c.compareReserved(cur, name, enumRanges(base.ReservedRanges()), enumRanges(cur.ReservedRanges()),
		base.ReservedNames(), cur.ReservedNames(), valueMembers(cur.Values()))
}

// member is a field of a message or a value of an enum.
type member struct {
	d    protoreflect.Descriptor
	name protoreflect.Name
	num  int64
}

func fieldMembers(fs protoreflect.FieldDescriptors) []member {
	out := make([]member, fs.Len())
	for i := range out {
		f := fs.Get(i)
		out[i] = member{f, f.Name(), int64(f.Number())}
	}
	return out
}

func valueMembers(vs protoreflect.EnumValueDescriptors) []member {
	out := make([]member, vs.Len())
	for i := range out {
		v := vs.Get(i)
		out[i] = member{v, v.Name(), int64(v.Number())}
	}
	return out
}

// compareReserved requires every baseline reserved number and name to stay
// reserved in cur (a message or enum) and names members that now use them.
func (c *comparer) compareReserved(cur protoreflect.Descriptor, name protoreflect.FullName,
	baseRanges, curRanges []numRange, baseNames, curNames protoreflect.Names, members []member) {
	for _, r := range baseRanges {
		for _, gap := range uncovered(r, curRanges) {
			c.report(cur, false, name, "reserved number(s) %s no longer reserved", gap)
			for _, m := range members {
				if gap.lo <= m.num && m.num <= gap.hi {
					c.report(m.d, false, name, "reserved number %d now used by %s", m.num, m.name)
				}
			}
		}
	}
	for i := 0; i < baseNames.Len(); i++ {
		n := baseNames.Get(i)
		if curNames.Has(n) {
			continue
		}
		c.report(cur, false, name, "reserved name %q no longer reserved", n)
		for _, m := range members {
			if m.name == n {
				c.report(m.d, false, name, "reserved name %q now used by number %d", n, m.num)
			}
		}
	}
}

// numRange is an inclusive range of field or enum numbers.
type numRange struct{ lo, hi int64 }

func (r numRange) String() string {
	if r.lo == r.hi {
		return fmt.Sprint(r.lo)
	}
	return fmt.Sprintf("%d to %d", r.lo, r.hi)
}

func fieldRanges(rs protoreflect.FieldRanges) []numRange {
	out := make([]numRange, rs.Len())
	for i := range out {
		r := rs.Get(i) // [start, end)
		out[i] = numRange{int64(r[0]), int64(r[1]) - 1}
	}
	return out
}

func enumRanges(rs protoreflect.EnumRanges) []numRange {
	out := make([]numRange, rs.Len())
	for i := range out {
		r := rs.Get(i) // [start, end]
		out[i] = numRange{int64(r[0]), int64(r[1])}
	}
	return out
}

// uncovered returns the parts of r not covered by any of cover.
func uncovered(r numRange, cover []numRange) []numRange {
	sorted := append([]numRange(nil), cover...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].lo < sorted[j].lo })
	var gaps []numRange
	next := r.lo
	for _, c := range sorted {
		if next > r.hi {
			break
		}
		if c.hi < next {
			continue
		}
		if c.lo > next {
			gaps = append(gaps, numRange{next, min(c.lo-1, r.hi)})
		}
		next = max(next, c.hi+1)
	}
	if next <= r.hi {
		gaps = append(gaps, numRange{next, r.hi})
	}
	return gaps
}

// fieldType names a field's wire type, e.g. "string", "cortex.v1.JobStatus"
// or "map<string, string>".
func fieldType(f protoreflect.FieldDescriptor) string {
	switch {
	case f.IsMap():
		return "map<" + fieldType(f.MapKey()) + ", " + fieldType(f.MapValue()) + ">"
	case f.Message() != nil:
		return string(f.Message().FullName())
	case f.Enum() != nil:
		return string(f.Enum().FullName())
	default:
		return f.Kind().String()
	}
}

// fieldLabel names a field's cardinality as written in the source.
func fieldLabel(f protoreflect.FieldDescriptor) string {
	switch {
	case f.IsMap():
		return "map"
	case f.Cardinality() == protoreflect.Repeated:
		return "repeated"
	case f.Cardinality() == protoreflect.Required:
		return "required"
	case f.HasOptionalKeyword():
		return "optional"
	default:
		return "singular"
	}
}

// oneofName names the real (non-synthetic) oneof holding f, or "none".
func oneofName(f protoreflect.FieldDescriptor) string {
	if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
		return "oneof " + string(o.Name())
	}
	return "none"
}

package scheduler

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Every field of JobInfo set to a non-zero value must survive cloneInfo: a
// field appended to the proto and forgotten there fails here.
func TestCloneInfoCopiesEveryField(t *testing.T) {
	t.Parallel()
	in := &pb.JobInfo{}
	setEveryField(t, in.ProtoReflect())
	out := cloneInfo(in)
	if !proto.Equal(in, out) {
		t.Fatalf("cloneInfo lost a field:\n in  %v\n out %v", in, out)
	}
	if out == in {
		t.Fatal("cloneInfo returned its argument")
	}
}

// The same for the copy of a request a dispatch publishes.
func TestCopyRequestCopiesEveryField(t *testing.T) {
	t.Parallel()
	in := &pb.JobRequest{}
	setEveryField(t, in.ProtoReflect())
	out := cloneRequest(in)
	if !proto.Equal(in, out) {
		t.Fatalf("copyRequest lost a field:\n in  %v\n out %v", in, out)
	}
}

// setEveryField sets every field of m to a non-zero value.
func setEveryField(t *testing.T, m protoreflect.Message) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			m.Mutable(fd).List().Append(protoreflect.ValueOfString("x"))
			continue
		case fd.IsMap() && fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind:
			m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString("v"))
			continue
		case fd.IsList() || fd.IsMap():
			t.Fatalf("field %s is a list or map of %s: teach this test about it", fd.Name(), fd.Kind())
		}
		var v protoreflect.Value
		switch fd.Kind() {
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString("x")
		case protoreflect.BytesKind:
			v = protoreflect.ValueOfBytes([]byte{1})
		case protoreflect.BoolKind:
			v = protoreflect.ValueOfBool(true)
		case protoreflect.Int32Kind:
			v = protoreflect.ValueOfInt32(7)
		case protoreflect.Int64Kind:
			v = protoreflect.ValueOfInt64(7)
		case protoreflect.EnumKind:
			v = protoreflect.ValueOfEnum(1)
		case protoreflect.MessageKind:
			v = protoreflect.ValueOfMessage((&pb.JobRequest{JobId: "x"}).ProtoReflect())
		case protoreflect.Uint32Kind:
			v = protoreflect.ValueOfUint32(7)
		default:
			t.Fatalf("field %s has kind %s: teach this test about it", fd.Name(), fd.Kind())
		}
		m.Set(fd, v)
	}
}

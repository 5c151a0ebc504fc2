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
	m := in.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
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
		default:
			t.Fatalf("field %s has kind %s: teach this test and cloneInfo about it", fd.Name(), fd.Kind())
		}
		m.Set(fd, v)
	}
	out := cloneInfo(in)
	if !proto.Equal(in, out) {
		t.Fatalf("cloneInfo lost a field:\n in  %v\n out %v", in, out)
	}
	if out == in {
		t.Fatal("cloneInfo returned its argument")
	}
}

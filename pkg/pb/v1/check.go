package v1

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The generated CheckDecoded methods (*_check.pb.go, made by
// tools/protocheck) report what protobuf-go's Unmarshal refuses and
// vtprotobuf's UnmarshalVT lets through: string fields that are not valid
// UTF-8 (proto3 forbids them) and malformed unknown fields (such as a group
// whose end tag does not match its start, which makes printing the message
// panic). Call CheckDecoded after UnmarshalVT on bytes from outside.

// InvalidUTF8Error names a string field holding bytes that are not valid UTF-8.
type InvalidUTF8Error struct {
	Field string // full name, e.g. cortex.v1.JobRequest.topic
}

func (e *InvalidUTF8Error) Error() string { return "field " + e.Field + ": invalid UTF-8" }

// checkUnknown parses the unknown fields kept for message msg.
func checkUnknown(b []byte, msg string) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%s: malformed unknown field: %w", msg, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%s: unknown field number %d out of range", msg, num)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("%s: malformed unknown field %d: %w", msg, num, protowire.ParseError(m))
		}
		b = b[n+m:]
	}
	return nil
}

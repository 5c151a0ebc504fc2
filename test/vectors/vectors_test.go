// Package vectors holds encoded bus packets that every implementation of the
// CortexOS wire contract must read and write byte for byte: this Go test and
// sdk/python/tests/test_vectors.py check the same files.
//
// Each <name>.json is a BusPacket in protojson, the readable description;
// <name>.bin is its encoding. reject_<class>_<name>.bin are packets a decoder
// must refuse, with the class of refusal (malformed, unknown_payload) in the
// name and the reason in <...>.txt.
//
// go test ./test/vectors -update rewrites the .bin files from the .json ones
// and from rejects below; review the diff: a changed .bin is a changed wire.
package vectors

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

var update = flag.Bool("update", false, "rewrite the .bin files")

// rejects are packets a decoder must refuse: their bytes and why.
var rejects = []struct {
	name, why string
	data      []byte
}{
	{"malformed_bad_utf8", "trace_id (field 1) is not UTF-8: proto3 strings must be", []byte{0x0a, 0x02, 0xc3, 0x28, 0x82, 0x01, 0x00}},
	{"malformed_truncated", "sender_id (field 2) says 16 bytes, 3 follow", []byte{0x12, 0x10, 'a', 'b', 'c'}},
	{"malformed_bad_wire_type", "field 1 with wire type 7, which does not exist", []byte{0x0f, 0x00}},
	{"unknown_payload_empty", "no bytes: a packet without a payload", []byte{}},
	{"unknown_payload_envelope_only", "trace_id and protocol_version, no payload", []byte{0x0a, 0x01, 't', 0x20, 0x01}},
	{"unknown_payload_newer_member", "only field 99, a payload member this version does not know", []byte{0x9a, 0x06, 0x00}},
}

func TestVectors(t *testing.T) {
	t.Parallel()
	names, err := filepath.Glob("*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	for _, name := range names {
		base := strings.TrimSuffix(name, ".json")
		t.Run(base, func(t *testing.T) {
			t.Parallel()
			js, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			want := new(pb.BusPacket)
			if err := protojson.Unmarshal(js, want); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(base+".bin", enc, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			bin, err := os.ReadFile(base + ".bin")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, bin) {
				t.Errorf("proto.Marshal of %s differs from %s.bin:\n got %x\nwant %x", name, base, enc, bin)
			}
			// The bus writes with vtprotobuf's generated code: the same bytes.
			vt, err := bus.AppendPacket(nil, want, 0)
			if err != nil || !bytes.Equal(vt, bin) {
				t.Errorf("bus.AppendPacket of %s differs from %s.bin (%v):\n got %x\nwant %x", name, base, err, vt, bin)
			}
			got, err := bus.Decode(bin, bus.DefaultMaxPacketBytes)
			if err != nil {
				t.Fatalf("bus.Decode(%s.bin): %v", base, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("%s.bin decodes to\n%v\nwant\n%v", base, got, want)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	t.Parallel()
	if *update {
		files, _ := filepath.Glob("reject_*")
		for _, f := range files {
			_ = os.Remove(f)
		}
		for _, r := range rejects {
			if err := os.WriteFile("reject_"+r.name+".bin", r.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile("reject_"+r.name+".txt", []byte(r.why+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob("reject_*.bin")
	if err != nil || len(files) != len(rejects) {
		t.Fatalf("%d reject vectors, want %d (go test ./test/vectors -update): %v", len(files), len(rejects), err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want := bus.ErrMalformed
		if strings.HasPrefix(f, "reject_unknown_payload_") {
			want = bus.ErrUnknownPayload
		}
		if _, err := bus.Decode(data, bus.DefaultMaxPacketBytes); !errors.Is(err, want) {
			t.Errorf("bus.Decode(%s) = %v, want %v", f, err, want)
		}
	}
	// Over the cap: refused before decoding, whatever the bytes.
	big := bytes.Repeat([]byte{0x0a, 0x01, 'a'}, 100)
	if _, err := bus.Decode(big, 64); !errors.Is(err, bus.ErrTooLarge) {
		t.Errorf("oversize packet: %v, want ErrTooLarge", err)
	}
}

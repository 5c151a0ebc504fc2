package bus

import (
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// resultPacket is a result packet decoded where nothing keeps it (the
// scheduler applies a result and drops it): the packet, its time stamp, its
// payload wrapper and its JobResult in one value, pooled. Four allocations
// per result fewer.
type resultPacket struct {
	packet  pb.BusPacket
	created timestamppb.Timestamp
	payload pb.BusPacket_JobResult
	result  pb.JobResult
}

var resultPackets = sync.Pool{New: func() any { return new(resultPacket) }}

// releaseResultPacket zeroes r (it may hold the last packet's strings) and
// pools it; nil is ignored.
func releaseResultPacket(r *resultPacket) {
	if r == nil {
		return
	}
	*r = resultPacket{}
	resultPackets.Put(r)
}

// BusPacket's field numbers that decodeTransient fills in place.
const (
	fieldCreatedAt protowire.Number = 3
	fieldJobResult protowire.Number = 11
)

// decodeTransient decodes data as decodePacket does (owned: strings share
// data), with the same result and the same errors, but a packet that carries
// a job_result is decoded into a pooled resultPacket, returned as pooled for
// releaseResultPacket once nothing uses the packet any more; any other
// packet is decoded as usual (pooled nil).
//
// The pooled messages are set in place only where data has their fields,
// so the packet is what decodePacket returns: a created_at or job_result
// absent from data is absent (nil) from the packet, and a payload that data
// sets after the job_result replaces it as usual
// (FuzzDecodeTransientMatchesDecode).
func decodeTransient(data []byte, maxBytes int) (_ *pb.BusPacket, pooled *resultPacket, _ error) {
	if maxBytes > 0 && len(data) > maxBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxBytes)
	}
	created, result, ok := topFields(data)
	if !ok || !result {
		p, err := decodePacket(data, maxBytes, true)
		return p, nil, err
	}
	r := resultPackets.Get().(*resultPacket)
	if created {
		r.packet.CreatedAt = &r.created
	}
	r.payload.JobResult = &r.result
	r.packet.Payload = &r.payload
	err := r.packet.UnmarshalVTUnsafe(data)
	if err == nil {
		err = r.packet.CheckDecoded()
		if err == nil {
			return &r.packet, r, nil
		}
	}
	releaseResultPacket(r)
	return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
}

// topFields reports whether data, a BusPacket, has a created_at and a
// job_result field at its top level; ok is false if data does not parse as
// a sequence of fields.
func topFields(data []byte) (created, result, ok bool) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return false, false, false
		}
		data = data[n:]
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return false, false, false
		}
		data = data[m:]
		switch num {
		case fieldCreatedAt:
			created = true
		case fieldJobResult:
			result = true
		}
	}
	return created, result, true
}

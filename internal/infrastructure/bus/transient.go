package bus

import (
	"fmt"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// intakePacket is a packet decoded for a handler that keeps none of it but
// a JobRequest (the scheduler records a submission's request, applies a
// result and drops it): the packet, its time stamp, its payload wrapper and a
// JobResult in one value, pooled. A JobRequest is allocated on its own, to
// be kept. Three allocations per submission and four per result fewer.
type intakePacket struct {
	packet  pb.BusPacket
	created timestamppb.Timestamp
	payload pb.BusPacket_JobResult
	result  pb.JobResult
	request pb.BusPacket_JobRequest
}

var intakePackets = sync.Pool{New: func() any { return new(intakePacket) }}

// releaseIntakePacket zeroes r (it may hold the last packet's strings) and
// pools it; nil is ignored.
func releaseIntakePacket(r *intakePacket) {
	if r == nil {
		return
	}
	*r = intakePacket{}
	intakePackets.Put(r)
}

// BusPacket's field numbers that decodeTransient fills in place.
const (
	fieldCreatedAt  protowire.Number = 3
	fieldJobRequest protowire.Number = 10
	fieldJobResult  protowire.Number = 11
)

// decodeTransient decodes data as decodePacket does (owned: strings share
// data), with the same result and the same errors, but a packet that carries
// a job_request or a job_result is decoded into a pooled intakePacket,
// returned as pooled for releaseIntakePacket once nothing uses the packet
// any more (but its JobRequest, and strings); any other packet is decoded as
// usual (pooled nil).
//
// expect is the payload the subject carries (fieldJobRequest on
// sys.job.submit, fieldJobResult on sys.job.result), or 0 when unknown. With
// it, the time stamp and that payload are set in place before the one pass
// that decodes data: vtprotobuf merges a field into a message already there,
// and replaces a oneof member of another kind, so a packet that carries them
// comes out as Decode's. Only one that leaves either empty (absent from data,
// or present and empty, which the pass cannot tell apart) is decoded again
// the careful way. Without expect, topFields first reads which of them data
// has.
//
// The pooled messages are set in place only where data has their fields,
// so the packet is what decodePacket returns: a created_at or payload absent
// from data is absent (nil) from the packet, and a payload that data sets
// after the first one replaces it as usual (FuzzDecodeTransientMatchesDecode).
func decodeTransient(data []byte, maxBytes int, expect protowire.Number) (_ *pb.BusPacket, pooled *intakePacket, _ error) {
	if maxBytes > 0 && len(data) > maxBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxBytes)
	}
	if expect == fieldJobRequest || expect == fieldJobResult {
		r := intakePackets.Get().(*intakePacket)
		r.packet.CreatedAt = &r.created
		r.setPayload(expect)
		err := r.packet.UnmarshalVTUnsafe(data)
		if err == nil && r.settled() {
			if err = r.packet.CheckDecoded(); err == nil {
				return &r.packet, r, nil
			}
		}
		releaseIntakePacket(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		// Something was left empty: read what data has, as without expect.
	}
	created, payload, ok := topFields(data)
	if !ok || (payload != fieldJobRequest && payload != fieldJobResult) {
		p, err := decodePacket(data, maxBytes, true)
		return p, nil, err
	}
	r := intakePackets.Get().(*intakePacket)
	if created {
		r.packet.CreatedAt = &r.created
	}
	r.setPayload(payload)
	err := r.packet.UnmarshalVTUnsafe(data)
	if err == nil {
		err = r.packet.CheckDecoded()
		if err == nil {
			return &r.packet, r, nil
		}
	}
	releaseIntakePacket(r)
	return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
}

// setPayload sets the packet's payload, in place, to an empty one of the
// given kind (fieldJobRequest or fieldJobResult). A JobRequest is allocated:
// the handler may keep it.
func (r *intakePacket) setPayload(kind protowire.Number) {
	if kind == fieldJobResult {
		r.payload.JobResult = &r.result
		r.packet.Payload = &r.payload
		return
	}
	r.request.JobRequest = new(pb.JobRequest)
	r.packet.Payload = &r.request
}

// settled reports whether what decodeTransient set in place before the pass
// was filled in by it: a time stamp that is not zero, and a payload (if it is
// still the one set) with a job_id. Anything else may be absent from data.
func (r *intakePacket) settled() bool {
	if r.packet.CreatedAt != &r.created || (r.created.Seconds == 0 && r.created.Nanos == 0) {
		return false
	}
	switch r.packet.Payload {
	case &r.payload:
		return r.result.JobId != ""
	case &r.request:
		return r.request.JobRequest.GetJobId() != ""
	}
	return true // replaced by a payload of another kind, which data has
}

// topFields reports whether data, a BusPacket, has a created_at field at its
// top level, and which of job_request and job_result comes first (0:
// neither); ok is false if data does not parse as a sequence of fields. A
// payload it does not report is decoded as usual: setting one in place that
// data lacks would be wrong, one that data replaces later is harmless.
func topFields(data []byte) (created bool, payload protowire.Number, ok bool) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return false, 0, false
		}
		data = data[n:]
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return false, 0, false
		}
		data = data[m:]
		switch {
		case num == fieldCreatedAt:
			created = true
		case payload == 0 && (num == fieldJobRequest || num == fieldJobResult):
			payload = num
		}
	}
	return created, payload, true
}

// expectedPayload is the payload packets on subject carry: a job request on
// sys.job.submit, a result on sys.job.result and below; 0 on any other.
func expectedPayload(subject string) protowire.Number {
	switch {
	case subject == wire.SubjectSubmit:
		return fieldJobRequest
	case strings.HasPrefix(subject, wire.SubjectResult) &&
		(len(subject) == len(wire.SubjectResult) || subject[len(wire.SubjectResult)] == '.'):
		return fieldJobResult
	}
	return 0
}

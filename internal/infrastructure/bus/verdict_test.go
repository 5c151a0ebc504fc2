package bus_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

func answerPacket(a *pb.JobAnswer) *pb.BusPacket {
	p := wire.NewPacket("t", "s")
	p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: a}
	return p
}

// submitAnswer is what a scheduler answers an accepted submission: the
// job as recorded, its request included.
func submitAnswer() *pb.JobAnswer {
	return &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{{
		JobId: "j1", State: pb.JobState_JOB_STATE_DISPATCHED, TraceId: "t", Attempt: 1,
		Request: &pb.JobRequest{JobId: "j1", Topic: "job.echo", EnvVars: map[string]string{"k": "v"}, Payload: []byte("x")},
	}}}
}

// verdictOf is the verdict decodePacket's full decode gives, as
// SubscribeAnswers read it before answerVerdict.
func verdictOf(t testing.TB, data []byte) (answer string, notAnswer bool, err error) {
	t.Helper()
	p, err := bus.Decode(data, bus.DefaultMaxPacketBytes)
	if err != nil {
		return "", false, err
	}
	a := p.GetJobAnswer()
	switch {
	case a == nil:
		return "", true, nil
	case a.GetOk():
		return bus.AnswerDone, false, nil
	case a.GetRetryable():
		return bus.AnswerRetry, false, nil
	}
	return bus.AnswerNotStored, false, nil
}

func TestAnswerVerdict(t *testing.T) {
	job := submitAnswer()
	bad := submitAnswer()
	bad.Jobs[0].Error = "\xff" // not UTF-8: skipped, never read
	merged := append(mustMarshal(t, answerPacket(&pb.JobAnswer{Ok: true})), mustMarshal(t, answerPacket(&pb.JobAnswer{Error: "later"}))...)
	replaced := append(mustMarshal(t, answerPacket(&pb.JobAnswer{Ok: true})), mustMarshal(t, wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j"}))...)
	replaced = append(replaced, mustMarshal(t, answerPacket(&pb.JobAnswer{Retryable: true}))...)
	wrongType := protowire.AppendTag(nil, 17, protowire.VarintType)
	wrongType = protowire.AppendVarint(wrongType, 1)
	okWrongType := protowire.AppendTag(nil, 17, protowire.BytesType)
	okWrongType = protowire.AppendBytes(okWrongType, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{1}))
	for _, tc := range []struct {
		name      string
		data      []byte
		answer    string
		notAnswer bool
		err       error
	}{
		{"submission accepted, job skipped", mustMarshal(t, answerPacket(job)), bus.AnswerDone, false, nil},
		{"job not UTF-8, not read", marshalVT(t, answerPacket(bad)), bus.AnswerDone, false, nil},
		{"done", bus.AnswerPacket(bus.AnswerDone), bus.AnswerDone, false, nil},
		{"retry", bus.AnswerPacket(bus.AnswerRetry), bus.AnswerRetry, false, nil},
		{"not stored", bus.AnswerPacket(bus.AnswerNotStored), bus.AnswerNotStored, false, nil},
		{"refusal", mustMarshal(t, answerPacket(&pb.JobAnswer{Error: "denied", Jobs: submitAnswer().Jobs})), bus.AnswerNotStored, false, nil},
		{"throttled", mustMarshal(t, answerPacket(&pb.JobAnswer{Retryable: true, RetryAfterMs: 5})), bus.AnswerRetry, false, nil},
		{"sent twice: merged", merged, bus.AnswerDone, false, nil},
		{"another payload in between: afresh", replaced, bus.AnswerRetry, false, nil},
		{"not an answer", mustMarshal(t, wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j"})), "", true, nil},
		{"no payload", mustMarshal(t, wire.NewPacket("t", "s")), "", false, bus.ErrUnknownPayload},
		{"garbage", []byte{0xff, 0xff, 0xff}, "", false, bus.ErrMalformed},
		{"answer with a wrong wire type", wrongType, "", false, bus.ErrMalformed},
		{"ok with a wrong wire type", okWrongType, "", false, bus.ErrMalformed},
		{"too large", mustMarshal(t, answerPacket(&pb.JobAnswer{Error: string(make([]byte, bus.DefaultMaxPacketBytes))})), "", false, bus.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer, _, notAnswer, err := bus.AnswerVerdict(tc.data, bus.DefaultMaxPacketBytes)
			if answer != tc.answer || notAnswer != tc.notAnswer || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("AnswerVerdict = %q, %v, %v; want %q, %v, %v", answer, notAnswer, err, tc.answer, tc.notAnswer, tc.err)
			}
		})
	}
}

// A batched answer is told apart from one to a single result, whether its
// list is packed or not; a payload sent after it replaces it.
func TestAnswerVerdictBatched(t *testing.T) {
	t.Parallel()
	batch := mustMarshal(t, answerPacket(&pb.JobAnswer{Ok: true, Answered: []uint64{4, 2}}))
	fields := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	fields = protowire.AppendVarint(protowire.AppendTag(fields, 9, protowire.VarintType), 5)
	unpacked := protowire.AppendBytes(protowire.AppendTag(nil, 17, protowire.BytesType), fields)
	result := mustMarshal(t, wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j"}))
	for _, tc := range []struct {
		name    string
		data    []byte
		batched bool
	}{
		{"packed", batch, true},
		{"one number at a time", unpacked, true},
		{"one result", bus.AnswerPacket(bus.AnswerDone), false},
		{"replaced by a result", append(append([]byte{}, batch...), result...), false},
	} {
		answer, batched, notAnswer, err := bus.AnswerVerdict(tc.data, bus.DefaultMaxPacketBytes)
		if err != nil || batched != tc.batched || (!notAnswer && answer != bus.AnswerDone) {
			t.Errorf("%s: AnswerVerdict = %q, batched %v, %v, %v; want batched %v", tc.name, answer, batched, notAnswer, err, tc.batched)
		}
	}
}

// FuzzAnswerVerdictMatchesDecode: answerVerdict never panics; whatever the
// full decode accepts gets the same verdict from it; what the full decode
// refuses as too large or not wire data it refuses too.
func FuzzAnswerVerdictMatchesDecode(f *testing.F) {
	f.Add(mustMarshal(f, answerPacket(submitAnswer())))
	f.Add(bus.AnswerPacket(bus.AnswerRetry))
	f.Add(bus.AnswerPacket(bus.AnswerNotStored))
	f.Add(mustMarshal(f, answerPacket(&pb.JobAnswer{Ok: true, Workers: []*pb.WorkerInfo{{LastSeenMs: 1}}, RetryAfterMs: 3})))
	f.Add(mustMarshal(f, wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j"})))
	f.Add(mustMarshal(f, answerPacket(&pb.JobAnswer{Ok: true, Answered: []uint64{1, 300, 1 << 40}})))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		answer, batched, notAnswer, err := bus.AnswerVerdict(data, bus.DefaultMaxPacketBytes)
		wantAnswer, wantNot, wantErr := verdictOf(t, data)
		if wantErr == nil && !batched {
			if p, _ := bus.Decode(data, bus.DefaultMaxPacketBytes); len(p.GetJobAnswer().GetAnswered()) > 0 {
				t.Fatalf("an answer listing results %v, read as not batched", p.GetJobAnswer().GetAnswered())
			}
		}
		if err != nil && (answer != "" || notAnswer) {
			t.Fatalf("a verdict with an error: %q, %v, %v", answer, notAnswer, err)
		}
		if err != nil && !errors.Is(err, bus.ErrMalformed) && !errors.Is(err, bus.ErrTooLarge) && !errors.Is(err, bus.ErrUnknownPayload) {
			t.Fatalf("error %v is none of the bus errors", err)
		}
		switch {
		case wantErr == nil && (err != nil || answer != wantAnswer || notAnswer != wantNot):
			t.Fatalf("AnswerVerdict = %q, %v, %v; the full decode: %q, %v", answer, notAnswer, err, wantAnswer, wantNot)
		case errors.Is(wantErr, bus.ErrTooLarge) && !errors.Is(err, bus.ErrTooLarge):
			t.Fatalf("too large for the full decode, AnswerVerdict: %v", err)
		}
	})
}

func marshalVT(t testing.TB, p *pb.BusPacket) []byte {
	t.Helper()
	data, err := p.MarshalVT() // writes invalid UTF-8 as it is
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// answerVerdict's walk knows BusPacket's field numbers by heart: the
// payloads are 10 to 18, job_answer 17 with ok 1 and retryable 3, the
// envelope's fields 1 to 4. A field appended to the contract must be taught
// to it (verdict.go); this fails until it is.
func TestAnswerVerdictKnowsTheContract(t *testing.T) {
	t.Parallel()
	md := (&pb.BusPacket{}).ProtoReflect().Descriptor()
	payload := md.Oneofs().ByName("payload")
	if payload == nil {
		t.Fatal("BusPacket has no oneof payload")
	}
	for i := 0; i < md.Fields().Len(); i++ {
		f := md.Fields().Get(i)
		n := f.Number()
		if f.ContainingOneof() == payload {
			if n < 10 || n > 18 {
				t.Errorf("payload field %s is number %d: answerVerdict's walk takes 10 to 18 as the payloads", f.Name(), n)
			}
			continue
		}
		if n < 1 || n > 4 {
			t.Errorf("envelope field %s is number %d: answerVerdict's walk knows 1 to 4", f.Name(), n)
		}
	}
	if got := md.Fields().Len(); got != 13 {
		t.Errorf("BusPacket has %d fields: answerVerdict's walk knows 13 (4 in the envelope, 9 payloads)", got)
	}
	a := md.Fields().ByName("job_answer")
	if a == nil || a.Number() != 17 {
		t.Fatalf("job_answer: %v; answerVerdict reads it as field 17", a)
	}
	ans := a.Message().Fields()
	if f := ans.ByName("ok"); f == nil || f.Number() != 1 {
		t.Errorf("JobAnswer.ok: %v; answerVerdict reads it as field 1", f)
	}
	if f := ans.ByName("retryable"); f == nil || f.Number() != 3 {
		t.Errorf("JobAnswer.retryable: %v; answerVerdict reads it as field 3", f)
	}
	if f := ans.ByName("answered"); f == nil || f.Number() != 9 || !f.IsList() {
		t.Errorf("JobAnswer.answered: %v; answerVerdict reads it as the list in field 9", f)
	}
}

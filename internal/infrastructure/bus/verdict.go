package bus

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The fields answerVerdict reads: BusPacket.job_answer, and JobAnswer's ok
// and retryable.
const (
	fieldJobAnswer       protowire.Number = 17
	fieldAnswerOk        protowire.Number = 1
	fieldAnswerRetryable protowire.Number = 3
	fieldAnswerAnswered  protowire.Number = 9
)

// answerVerdict reads what SubscribeAnswers hands its handler from an
// encoded answer: AnswerDone (ok), AnswerRetry (retryable) or
// AnswerNotStored (neither), in one pass over data that allocates nothing.
// The rest of the answer (the job record an answered submission's answer
// carries, its error text) is skipped: neither decoded nor checked.
// notAnswer is true for a valid packet whose payload is not a job_answer.
// Bytes it cannot walk, or that set a known field with another wire type,
// are read by decodePacket instead, so that anything decodePacket accepts
// gets the same verdict from both (FuzzAnswerVerdictMatchesDecode) and
// what it refuses is refused with its error. batched is true when the
// answer lists the results it answers (JobAnswer.answered: a batched answer,
// which the caller decodes in full to read the list).
func answerVerdict(data []byte, maxBytes int) (answer string, batched, notAnswer bool, err error) {
	if maxBytes > 0 && len(data) > maxBytes {
		return "", false, false, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxBytes)
	}
	if ok, retryable, batched, payload, walked := walkAnswer(data); walked {
		switch {
		case payload == 0:
			return "", false, false, ErrUnknownPayload
		case payload != fieldJobAnswer:
			return "", false, true, nil
		}
		return verdictName(ok, retryable), batched, false, nil
	}
	p, err := decodePacket(data, maxBytes, false)
	if err != nil {
		return "", false, false, err
	}
	a := p.GetJobAnswer()
	if a == nil {
		return "", false, true, nil
	}
	return verdictName(a.GetOk(), a.GetRetryable()), len(a.GetAnswered()) > 0, false, nil
}

func verdictName(ok, retryable bool) string {
	switch {
	case ok:
		return AnswerDone
	case retryable:
		return AnswerRetry
	}
	return AnswerNotStored
}

// walkAnswer walks a BusPacket's fields: payload is the number of the
// last payload (oneof) field set (0: none) and, when it is job_answer, ok
// and retryable are the answer's, merged as protobuf merges a message field
// sent more than once (a payload of another kind in between starts it
// afresh), and batched is whether it has an answered field (however empty).
// walked is false when data is not well-formed wire data, or sets a known
// field with a wire type the contract does not give it.
func walkAnswer(data []byte) (ok, retryable, batched bool, payload protowire.Number, walked bool) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return false, false, false, 0, false
		}
		data = data[n:]
		switch {
		case num == 1 || num == 2 || num == 3 || (num >= 10 && num <= 18): // strings, created_at, payloads
			if typ != protowire.BytesType {
				return false, false, false, 0, false
			}
		case num == 4: // protocol_version
			if typ != protowire.VarintType {
				return false, false, false, 0, false
			}
		}
		if num == fieldJobAnswer {
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return false, false, false, 0, false
			}
			data = data[n:]
			if payload != fieldJobAnswer {
				ok, retryable, batched = false, false, false
			}
			payload = fieldJobAnswer
			if ok, retryable, batched, walked = walkAnswerFields(v, ok, retryable, batched); !walked {
				return false, false, false, 0, false
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return false, false, false, 0, false
		}
		data = data[n:]
		if num >= 10 && num <= 18 {
			payload = num
		}
	}
	return ok, retryable, batched, payload, true
}

// walkAnswerFields walks a JobAnswer's fields, merging ok, retryable and
// batched into the values given.
func walkAnswerFields(data []byte, ok, retryable, batched bool) (bool, bool, bool, bool) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return false, false, false, false
		}
		data = data[n:]
		switch num {
		case fieldAnswerOk, fieldAnswerRetryable, 5: // bools, retry_after_ms
			if typ != protowire.VarintType {
				return false, false, false, false
			}
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return false, false, false, false
			}
			data = data[n:]
			switch num {
			case fieldAnswerOk:
				ok = v != 0
			case fieldAnswerRetryable:
				retryable = v != 0
			}
			continue
		case 2, 4, 6, 7, 8: // error, jobs, rule_id, workers, next_page_token
			if typ != protowire.BytesType {
				return false, false, false, false
			}
		case fieldAnswerAnswered: // packed, or one number at a time
			if typ != protowire.BytesType && typ != protowire.VarintType {
				return false, false, false, false
			}
			batched = true
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return false, false, false, false
		}
		data = data[n:]
	}
	return ok, retryable, batched, true
}

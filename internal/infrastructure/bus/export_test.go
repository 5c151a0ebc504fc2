package bus

import pb "github.com/cortex-os/core/pkg/pb/v1"

// Releaser gives a pooled packet back.
type Releaser interface{ Release() }

func (r *intakePacket) Release() { releaseIntakePacket(r) }

type nopReleaser struct{}

func (nopReleaser) Release() {}

// DecodeTransient is decodeTransient for the external tests, as the
// scheduler's intake calls it for packets received on subject.
func DecodeTransient(data []byte, maxBytes int, subject string) (*pb.BusPacket, Releaser, error) {
	p, pooled, err := decodeTransient(data, maxBytes, expectedPayload(subject))
	if pooled == nil {
		return p, nopReleaser{}, err
	}
	return p, pooled, err
}

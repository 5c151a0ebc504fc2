package bus

import pb "github.com/cortex-os/core/pkg/pb/v1"

// DecodeTransient is decodeTransient for the external tests; release gives
// the pooled packet back.
func DecodeTransient(data []byte, maxBytes int) (p *pb.BusPacket, release func(), err error) {
	p, pooled, err := decodeTransient(data, maxBytes)
	return p, func() { releaseResultPacket(pooled) }, err
}

//go:build !amd64 && !arm64

package sandbox

const (
	auditArch = 0 // no filter on this architecture (docs/code-python.md)
	x32Bit    = 0
)

func deniedSyscalls() []int { return nil }

//go:build unix

package systest

import (
	"os"
	"syscall"
)

// resume continues a process a test may have stopped (SIGSTOP), so that it
// can act on the signal that ends it.
func resume(p *os.Process) { _ = p.Signal(syscall.SIGCONT) }

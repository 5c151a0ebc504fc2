//go:build !unix

package systest

import "os"

// resume does nothing where there is no SIGSTOP to undo.
func resume(*os.Process) {}

package safety

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular is matched (errors.Is) by the error of a policy path that
// is not a regular file: a named pipe, a device, a directory, a socket.
// Such a path is refused without being read, so that a FIFO (whose read
// waits for a writer) or a device (whose read never ends) cannot stall the
// kernel's watcher.
var ErrNotRegular = errors.New("not a regular file")

// openRegular opens path for reading without blocking, and keeps it only if
// what was opened is a regular file. The check is made on the opened file
// (fstat), not on the path before opening it, so that the path cannot be
// swapped for a FIFO between the check and the read. O_NONBLOCK makes the
// open of a FIFO return at once instead of waiting for a writer; for a
// regular file it changes nothing.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrNotRegular, fileKind(info.Mode()))
	}
	return f, nil
}

// fileKind names what a non-regular file is.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0, m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSocket != 0:
		return "a socket"
	default:
		return "mode " + m.Type().String()
	}
}

// readRegular reads at most MaxPolicyBytes+1 bytes of the regular file at
// path (openRegular).
func readRegular(path string) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxPolicyBytes+1))
}

package bench

import "runtime"

// maxRSSBytes converts getrusage's ru_maxrss: kilobytes on Linux, bytes on
// macOS.
func maxRSSBytes(maxrss int64) int64 {
	if runtime.GOOS == "darwin" {
		return maxrss
	}
	return maxrss * 1024
}

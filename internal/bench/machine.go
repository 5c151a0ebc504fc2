package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// machineBusy is the CPU time the whole machine spent busy (user, nice,
// system, irq, softirq, steal) according to /proc/stat, and ok=false where
// there is no /proc/stat. Subtracting the bench's own CPU time from it tells
// how much other processes ran during a measurement: on a shared box they
// take CPU from it, and the report says so.
func machineBusy() (busy time.Duration, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, false
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, false
	}
	// user nice system idle iowait irq softirq steal, in USER_HZ ticks.
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseUint(fields[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += v
	}
	const userHZ = 100 // USER_HZ is 100 on every Linux architecture Go supports
	return time.Duration(ticks) * (time.Second / userHZ), true
}

package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// IsTerminal reports whether f is a character device (a terminal), so that a
// progress bar is drawn only where someone watches.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressBar draws "label [=====>    ]  45% 45000/100000" on one line,
// redrawn in place. With a nil writer it does nothing.
type progressBar struct {
	w     io.Writer
	label string
	total int64
	last  int
}

func newProgressBar(w io.Writer, label string, total int64) *progressBar {
	return &progressBar{w: w, label: label, total: total, last: -1}
}

const barWidth = 30

func (b *progressBar) draw(done int64) {
	if b.w == nil || b.total <= 0 {
		return
	}
	pct := int(done * 100 / b.total)
	if pct == b.last {
		return
	}
	b.last = pct
	fill := int(done * barWidth / b.total)
	bar := strings.Repeat("=", fill)
	if fill < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-fill-1)
	}
	fmt.Fprintf(b.w, "\r%-16s [%s] %3d%% %d/%d", b.label, bar, pct, done, b.total)
}

func (b *progressBar) finish(done func() int64) {
	if b.w == nil || b.last < 0 {
		return
	}
	b.draw(done())
	fmt.Fprint(b.w, "\r\033[K")
}

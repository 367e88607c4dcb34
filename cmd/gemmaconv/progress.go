package main

import (
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newProgress returns a byte-progress callback that draws a bar on stderr,
// or nil when quiet or stderr is not a terminal (CI logs stay clean).
func newProgress(g *globalFlags, desc string) (update func(done, total int64), finish func()) {
	if g.quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	update = func(done, total int64) {
		if bar == nil {
			bar = progressbar.DefaultBytes(total, desc)
		}
		_ = bar.Set64(done)
	}
	finish = func() {
		if bar != nil {
			_ = bar.Finish()
		}
	}
	return update, finish
}

//go:build unix

package gguf

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"
)

// mmapFile maps the whole file read-only and shared.
func mmapFile(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || size > math.MaxInt {
		return nil, fmt.Errorf("cannot map %d bytes", size)
	}
	return unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
}

func munmap(b []byte) error { return unix.Munmap(b) }

// dontNeed drops b's pages; for a read-only file mapping they are read
// back from the file if touched again.
func dontNeed(b []byte) { _ = unix.Madvise(b, unix.MADV_DONTNEED) }

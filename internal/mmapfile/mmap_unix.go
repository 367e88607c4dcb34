//go:build unix

// Package mmapfile maps files read-only for the format readers, which
// serve tensor bytes as windows into the mapping and drop pages they are
// done with, so resident memory stays near the bytes in use.
package mmapfile

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"
)

// Map maps the first size bytes of f read-only and shared.
func Map(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || size > math.MaxInt {
		return nil, fmt.Errorf("cannot map %d bytes", size)
	}
	return unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
}

// Unmap releases a mapping made by Map.
func Unmap(b []byte) error { return unix.Munmap(b) }

// DontNeed drops b's pages (madvise MADV_DONTNEED); for a read-only file
// mapping they are read back from the file if touched again.
func DontNeed(b []byte) { _ = unix.Madvise(b, unix.MADV_DONTNEED) }

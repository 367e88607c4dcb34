//go:build !unix

// Package mmapfile maps files read-only for the format readers; on this
// platform mapping is unavailable and readers fall back to pread.
package mmapfile

import (
	"errors"
	"os"
)

// Map is unavailable here; callers fall back to pread.
func Map(*os.File, int64) ([]byte, error) { return nil, errors.New("mmap not supported") }

// Unmap does nothing here.
func Unmap([]byte) error { return nil }

// DontNeed does nothing here.
func DontNeed([]byte) {}

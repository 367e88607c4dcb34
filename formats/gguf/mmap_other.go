//go:build !unix

package gguf

import (
	"errors"
	"os"
)

// mmapFile is unavailable here; Open falls back to pread.
func mmapFile(*os.File, int64) ([]byte, error) { return nil, errors.New("mmap not supported") }

func munmap([]byte) error { return nil }

func dontNeed([]byte) {}

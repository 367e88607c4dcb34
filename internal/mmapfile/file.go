package mmapfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// ErrNotRegular is returned by Open for directories, devices and pipes.
var ErrNotRegular = errors.New("not a regular file")

// File is a model file's bytes for a reader: a read-only mapping where
// the platform allows, else the open file read with pread, or bytes a
// caller already holds. Tensor windows read through it and release its
// pages. It is safe for concurrent use.
type File struct {
	data   []byte   // the whole file: mapped, or given to FromBytes; nil when reading with pread
	mapped bool     // data is an mmap (unmap on Close, madvise on release)
	file   *os.File // open while the File is; nil for in-memory bytes
	size   int64
	closed atomic.Bool
}

// Open opens path, checks that it is a regular file and maps it.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	f := &File{file: fh, size: st.Size()}
	if data, err := Map(fh, f.size); err == nil {
		f.data, f.mapped = data, true
	}
	return f, nil
}

// FromBytes serves data held in memory (tests, tools that have the bytes).
func FromBytes(data []byte) *File { return &File{data: data, size: int64(len(data))} }

// Size is the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// Bytes returns the whole file when it is in memory (mapped or given),
// else nil. The slice is valid until Close.
func (f *File) Bytes() []byte {
	if f.closed.Load() {
		return nil
	}
	return f.data
}

// ReadAt implements io.ReaderAt over the whole file.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, errors.New("file is closed")
	}
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if f.data != nil {
		if off >= int64(len(f.data)) {
			return 0, io.EOF
		}
		n := copy(p, f.data[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	return f.file.ReadAt(p, off)
}

// Close unmaps and closes the file; windows fail afterwards.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	var err error
	if f.mapped {
		err = Unmap(f.data)
	}
	if f.file != nil {
		if cerr := f.file.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Window returns a reader of bytes [off, off+size) of f. label starts its
// errors ("gguf: model.gguf: tensor blk.0.attn_q.weight").
func (f *File) Window(label string, off, size int64) *Window {
	return &Window{f: f, label: label, off: off, size: size}
}

// Window is one tensor's bytes in a File. It implements io.ReaderAt,
// ir.Releaser and ir.RangeReleaser.
type Window struct {
	f     *File
	label string
	off   int64 // file offset
	size  int64
}

// Size is the window's size in bytes.
func (w *Window) Size() int64 { return w.size }

// ReadAt reads from the window; off is relative to its start.
func (w *Window) ReadAt(p []byte, off int64) (int, error) {
	if w.f.closed.Load() {
		return 0, fmt.Errorf("%s: file is closed", w.label)
	}
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", w.label, off)
	}
	if off >= w.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > w.size-off {
		p = p[:w.size-off]
	}
	n, err := w.f.ReadAt(p, w.off+off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("%s: reading at byte %d: %w", w.label, w.off+off+int64(n), err)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// Bytes returns the window as a slice of the mapping, valid until the file
// is closed, or nil where the file is read with pread.
func (w *Window) Bytes() []byte {
	data := w.f.Bytes()
	if data == nil {
		return nil
	}
	return data[w.off : w.off+w.size : w.off+w.size]
}

// Release drops the window's pages, so a consumer that walks a model
// tensor by tensor keeps its resident memory near one tensor.
func (w *Window) Release() { w.ReleaseRange(0, w.size) }

// ReleaseRange drops the pages holding bytes [off, off+n) of the window
// (ir.RangeReleaser). The mapping is read-only and file-backed, so a page
// dropped too eagerly is simply read again.
func (w *Window) ReleaseRange(off, n int64) {
	if !w.f.mapped || w.f.closed.Load() || off < 0 || n <= 0 || off >= w.size {
		return
	}
	ReleaseCovering(w.f.data, w.off+off, min(n, w.size-off))
}

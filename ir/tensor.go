package ir

import (
	"fmt"
	"io"
	"math"
)

// Tensor is one named weight. Shape lists dimensions outermost first, as
// NumPy and PyTorch do: a matrix is [rows, cols] and its rows are
// contiguous. (GGUF lists ne[] innermost first; its reader and writer
// reverse.) For quantized types each row is a whole number of blocks.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	// Source yields the tensor's bytes in DType, exactly Size() of them.
	// Readers return lazy sources (an mmap window, a zip entry, zarr
	// chunks); nothing is read until someone calls ReadAt.
	Source io.ReaderAt
}

// Releaser is implemented by sources that can drop what they hold in
// memory (for an mmap: tell the kernel the pages are no longer needed).
// Consumers call Release when they are done with a tensor so that peak RSS
// stays near one tensor, not the model.
type Releaser interface{ Release() }

// Release tells t's source that its data is no longer needed, if the source
// supports that.
func (t *Tensor) Release() {
	if r, ok := t.Source.(Releaser); ok {
		r.Release()
	}
}

// RangeReleaser is implemented by sources that can drop part of what they
// hold: bytes [off, off+n) of the tensor. Streaming consumers call it after
// each chunk so that even one huge tensor (an embedding of a gigabyte)
// never becomes resident whole.
type RangeReleaser interface{ ReleaseRange(off, n int64) }

// ReleaseRange tells t's source that bytes [off, off+n) are no longer
// needed, if the source supports that.
func (t *Tensor) ReleaseRange(off, n int64) {
	if r, ok := t.Source.(RangeReleaser); ok {
		r.ReleaseRange(off, n)
	}
}

// NumElements is the product of the dimensions.
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Cols is the length of the innermost dimension (1 for a scalar).
func (t *Tensor) Cols() int64 {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// Rows is the number of rows: all elements divided by Cols.
func (t *Tensor) Rows() int64 {
	c := t.Cols()
	if c == 0 {
		return 0
	}
	return t.NumElements() / c
}

// RowBytes is the size of one row in bytes.
func (t *Tensor) RowBytes() int64 {
	n, _ := RowBytes(t.DType, t.Cols())
	return n
}

// Size is the tensor's size in bytes.
func (t *Tensor) Size() int64 { return t.RowBytes() * t.Rows() }

// ReadRows reads rows [row0, row0+n) into dst (len n*RowBytes()).
func (t *Tensor) ReadRows(row0, n int64, dst []byte) error {
	rb := t.RowBytes()
	if row0 < 0 || n < 0 || row0+n > t.Rows() {
		return fmt.Errorf("tensor %s: rows [%d,%d) outside [0,%d)", t.Name, row0, row0+n, t.Rows())
	}
	if int64(len(dst)) != n*rb {
		return fmt.Errorf("tensor %s: buffer of %d bytes for %d rows of %d", t.Name, len(dst), n, rb)
	}
	if _, err := t.Source.ReadAt(dst, row0*rb); err != nil {
		return fmt.Errorf("tensor %s: reading rows [%d,%d): %w", t.Name, row0, row0+n, err)
	}
	return nil
}

// check validates the tensor's own fields with overflow-safe arithmetic.
func (t *Tensor) check() error {
	if !t.DType.Known() {
		return fmt.Errorf("tensor %s: unknown type %d", t.Name, uint32(t.DType))
	}
	if len(t.Shape) == 0 || len(t.Shape) > 4 {
		return fmt.Errorf("tensor %s: %d dimensions (1 to 4 supported)", t.Name, len(t.Shape))
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d <= 0 {
			return fmt.Errorf("tensor %s: dimension %d in shape %v", t.Name, d, t.Shape)
		}
		if n > math.MaxInt64/d {
			return fmt.Errorf("tensor %s: shape %v overflows", t.Name, t.Shape)
		}
		n *= d
	}
	if _, err := RowBytes(t.DType, t.Cols()); err != nil {
		return fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if t.Source == nil {
		return fmt.Errorf("tensor %s: no data source", t.Name)
	}
	return nil
}

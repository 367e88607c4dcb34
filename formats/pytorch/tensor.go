package pytorch

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// Storage is a torch storage: a flat array of Numel elements of Type that
// tensors view. Its bytes stay in the checkpoint file until a tensor reads
// them.
type Storage struct {
	// Key names the storage within its checkpoint (the zip entry
	// archive/data/<Key>, or the legacy storage key).
	Key      string
	Type     ScalarType
	Numel    int64
	Location string

	src       io.ReaderAt // set when the archive binds the storage's bytes
	parent    *Storage    // legacy storage views share their root's bytes
	parentOff int64
}

// NBytes is the storage's size in bytes.
func (s *Storage) NBytes() int64 { return s.Numel * s.Type.Size() }

func (s *Storage) reader() (io.ReaderAt, error) {
	if s.parent != nil {
		p, err := s.parent.reader()
		if err != nil {
			return nil, err
		}
		return io.NewSectionReader(p, s.parentOff, s.NBytes()), nil
	}
	if s.src == nil {
		return nil, fmt.Errorf("storage %s has no data in the checkpoint", quoteName(s.Key))
	}
	return s.src, nil
}

// TensorRef is a tensor as a checkpoint stores it: a strided view of a
// storage. Offset and strides count elements of DType.
type TensorRef struct {
	Storage      *Storage
	DType        ScalarType
	Offset       int64
	Shape        []int64
	Stride       []int64
	RequiresGrad bool
}

// NumElements is the product of the shape.
func (t *TensorRef) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// NBytes is the size of the tensor's data in bytes.
func (t *TensorRef) NBytes() int64 { return t.NumElements() * t.DType.Size() }

// check validates the view against its storage with overflow-safe
// arithmetic: every element it can address lies inside the storage.
func (t *TensorRef) check() error {
	if len(t.Shape) != len(t.Stride) {
		return fmt.Errorf("tensor has %d sizes but %d strides", len(t.Shape), len(t.Stride))
	}
	es := t.DType.Size()
	if es == 0 {
		return fmt.Errorf("tensor has unknown element type")
	}
	if t.Offset < 0 || t.Offset > t.Storage.NBytes()/es {
		return fmt.Errorf("storage offset %d outside storage %s of %d bytes", t.Offset, quoteName(t.Storage.Key), t.Storage.NBytes())
	}
	n := int64(1)
	last := t.Offset
	for i, d := range t.Shape {
		s := t.Stride[i]
		if d < 0 || s < 0 {
			return fmt.Errorf("negative size or stride in %v / %v", t.Shape, t.Stride)
		}
		if d != 0 && n > math.MaxInt64/d {
			return fmt.Errorf("shape %v overflows", t.Shape)
		}
		n *= d
		if d > 0 {
			if s != 0 && d-1 > (math.MaxInt64-last)/s {
				return fmt.Errorf("view %v / %v overflows", t.Shape, t.Stride)
			}
			last += (d - 1) * s
		}
	}
	if n == 0 {
		return nil
	}
	if n > math.MaxInt64/es {
		return fmt.Errorf("shape %v overflows", t.Shape)
	}
	stBytes := t.Storage.NBytes()
	if last >= math.MaxInt64/es || (last+1)*es > stBytes {
		return fmt.Errorf("view at offset %d with shape %v and stride %v reaches element %d of %s, beyond storage %s of %d bytes",
			t.Offset, t.Shape, t.Stride, last, t.DType, quoteName(t.Storage.Key), stBytes)
	}
	return nil
}

// Contiguous reports whether the tensor's elements are in row-major order
// with no gaps (dimensions of size 1 may have any stride).
func (t *TensorRef) Contiguous() bool {
	want := int64(1)
	for i := len(t.Shape) - 1; i >= 0; i-- {
		if t.Shape[i] == 1 {
			continue
		}
		if t.Stride[i] != want {
			return false
		}
		want *= t.Shape[i]
	}
	return true
}

// Rows returns the view of rows [r0, r0+n) along the first dimension; it
// shares the storage (no copy).
func (t *TensorRef) Rows(r0, n int64) (*TensorRef, error) {
	if len(t.Shape) == 0 || r0 < 0 || n < 0 || r0 > t.Shape[0] || n > t.Shape[0]-r0 {
		return nil, fmt.Errorf("rows [%d,%d) outside a tensor of shape %v", r0, r0+n, t.Shape)
	}
	v := *t
	v.Shape = append([]int64(nil), t.Shape...)
	v.Shape[0] = n
	v.Stride = append([]int64(nil), t.Stride...)
	if n > 0 {
		v.Offset = t.Offset + r0*t.Stride[0]
	}
	if err := v.check(); err != nil {
		return nil, err
	}
	return &v, nil
}

// maxGatherSpan is the largest storage span a non-contiguous tensor's
// reader loads into memory to gather from; wider views read element runs
// one at a time. (A variable so tests can exercise both paths.)
var maxGatherSpan int64 = 256 << 20

// Reader returns the tensor's bytes in row-major order. A contiguous
// tensor is a window of its storage; any other view is gathered on demand.
func (t *TensorRef) Reader() (io.ReaderAt, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	src, err := t.Storage.reader()
	if err != nil {
		return nil, err
	}
	es := t.DType.Size()
	if t.Contiguous() {
		return io.NewSectionReader(src, t.Offset*es, t.NBytes()), nil
	}
	return newStridedReader(src, t), nil
}

// stridedReader yields a non-contiguous view in row-major order.
type stridedReader struct {
	src    io.ReaderAt
	es     int64
	offset int64
	shape  []int64
	stride []int64
	size   int64

	spanLo, spanHi int64 // storage element range the view touches
	mu             sync.Mutex
	span           []byte // the span's bytes while loaded
}

// Release drops the loaded span (ir.Releaser); a later read loads it again.
func (r *stridedReader) Release() {
	r.mu.Lock()
	r.span = nil
	r.mu.Unlock()
}

// loadSpan returns the storage bytes the view touches, reading them on
// first use, or nil when the span is too wide to hold.
func (r *stridedReader) loadSpan() ([]byte, error) {
	spanBytes := (r.spanHi - r.spanLo + 1) * r.es
	if spanBytes > maxGatherSpan {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.span == nil {
		b := make([]byte, spanBytes)
		if _, err := r.src.ReadAt(b, r.spanLo*r.es); err != nil {
			return nil, fmt.Errorf("reading storage bytes [%d,%d): %w", r.spanLo*r.es, (r.spanHi+1)*r.es, err)
		}
		r.span = b
	}
	return r.span, nil
}

func newStridedReader(src io.ReaderAt, t *TensorRef) *stridedReader {
	r := &stridedReader{src: src, es: t.DType.Size(), offset: t.Offset, shape: t.Shape, stride: t.Stride, size: t.NBytes()}
	r.spanLo, r.spanHi = t.Offset, t.Offset
	for i, d := range t.Shape {
		if d > 0 {
			r.spanHi += (d - 1) * t.Stride[i]
		}
	}
	return r
}

func (r *stridedReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := int64(len(p))
	short := false
	if want > r.size-off {
		want, short = r.size-off, true
	}
	e0 := off / r.es
	e1 := (off + want + r.es - 1) / r.es
	dst := p[:want]
	lead := off - e0*r.es
	if lead == 0 && want%r.es == 0 {
		if err := r.gather(dst, e0, e1); err != nil {
			return 0, err
		}
	} else {
		// An unaligned read gathers whole elements and copies the part asked for.
		buf := make([]byte, (e1-e0)*r.es)
		if err := r.gather(buf, e0, e1); err != nil {
			return 0, err
		}
		copy(dst, buf[lead:])
	}
	if short {
		return int(want), io.EOF
	}
	return int(want), nil
}

// gather fills buf with logical elements [e0, e1).
func (r *stridedReader) gather(buf []byte, e0, e1 int64) error {
	nd := len(r.shape)
	idx := make([]int64, nd)
	rem := e0
	for i := nd - 1; i >= 0; i-- {
		if r.shape[i] > 0 {
			idx[i] = rem % r.shape[i]
			rem /= r.shape[i]
		}
	}
	span, err := r.loadSpan()
	if err != nil {
		return err
	}
	inner := int64(1)
	if nd > 0 && r.stride[nd-1] == 1 {
		inner = r.shape[nd-1]
	}
	pos := int64(0)
	for e := e0; e < e1; {
		at := r.offset
		for i := 0; i < nd; i++ {
			at += idx[i] * r.stride[i]
		}
		run := int64(1)
		if inner > 1 {
			run = inner - idx[nd-1]
		}
		if run > e1-e {
			run = e1 - e
		}
		out := buf[pos*r.es : (pos+run)*r.es]
		if span != nil {
			copy(out, span[(at-r.spanLo)*r.es:])
		} else if _, err := r.src.ReadAt(out, at*r.es); err != nil {
			return fmt.Errorf("reading storage at byte %d: %w", at*r.es, err)
		}
		pos += run
		e += run
		// advance the multi-index by run elements
		carry := run
		for i := nd - 1; i >= 0 && carry > 0; i-- {
			v := idx[i] + carry
			idx[i] = v % r.shape[i]
			carry = v / r.shape[i]
		}
	}
	return nil
}

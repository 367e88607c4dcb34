package runtime

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// chunkRows is how many weight rows a worker dequantizes at a time. The
// float32 scratch is chunkRows*Cols values (256 KiB for 4096 columns), small
// enough to stay in cache while every activation of the batch passes over it.
const chunkRows = 16

// Matrix is one weight matrix of Rows×Cols values kept in its stored type
// (F32, F16, BF16 or any quantized ggml type with a registered kernel).
// Mul multiplies it with a batch of activations by dequantizing a few rows
// at a time into a float32 scratch, so the model code never looks at the
// type and memory stays a fixed working set unless the matrix is cached.
type Matrix struct {
	// Name is the tensor's canonical name, used in errors.
	Name string
	// Rows and Cols are the matrix dimensions: Mul maps Cols inputs to Rows outputs.
	Rows, Cols int
	// DType is the stored element type.
	DType ir.DType

	t        *ir.Tensor
	rowBytes int
	decode   func(src []byte, dst []float32) error
	cached   []float32 // Rows*Cols dequantized values, or nil
}

// NewMatrix wraps a 2-D tensor without reading it. It checks that the
// type can be decoded, so a missing kernel is reported at load time, not
// halfway through a prompt.
func NewMatrix(t *ir.Tensor) (*Matrix, error) {
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("tensor %s: shape %v is not a matrix", t.Name, t.Shape)
	}
	if t.Source == nil {
		return nil, fmt.Errorf("tensor %s: no data source", t.Name)
	}
	rows, cols := t.Shape[0], t.Shape[1]
	if rows <= 0 || cols <= 0 || rows > 1<<31-1 || cols > 1<<24 {
		return nil, fmt.Errorf("tensor %s: shape %v out of range", t.Name, t.Shape)
	}
	rb, err := ir.RowBytes(t.DType, cols)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	m := &Matrix{Name: t.Name, Rows: int(rows), Cols: int(cols), DType: t.DType, t: t, rowBytes: int(rb)}
	m.decode, err = decoder(t.DType)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	return m, nil
}

// decoder returns the function that widens whole rows of type t to float32:
// ir.DecodeFloats for the plain float types, the quantize package's
// registered dequantizer for everything else.
func decoder(t ir.DType) (func(src []byte, dst []float32) error, error) {
	switch t {
	case ir.F32, ir.F16, ir.BF16, ir.F64:
		return func(src []byte, dst []float32) error { return ir.DecodeFloats(t, src, dst) }, nil
	}
	if k, ok := quantize.Lookup(t); !ok || k.Dequantize == nil {
		return nil, fmt.Errorf("no dequantizer for type %s", t)
	}
	return func(src []byte, dst []float32) error {
		_, err := quantize.DequantizeRows(t, src, dst)
		return err
	}, nil
}

// Bytes is the stored size of the matrix.
func (m *Matrix) Bytes() int64 { return int64(m.rowBytes) * int64(m.Rows) }

// Cached reports whether the matrix holds its dequantized float32 values in memory.
func (m *Matrix) Cached() bool { return m.cached != nil }

// cache dequantizes the whole matrix into memory once.
func (m *Matrix) cache() error {
	if m.cached != nil {
		return nil
	}
	vals := make([]float32, m.Rows*m.Cols)
	raw := make([]byte, chunkRows*m.rowBytes)
	for r := 0; r < m.Rows; r += chunkRows {
		n := min(chunkRows, m.Rows-r)
		if err := m.readRows(r, n, raw[:n*m.rowBytes], vals[r*m.Cols:(r+n)*m.Cols]); err != nil {
			return err
		}
	}
	m.cached = vals
	return nil
}

// readRows reads rows [r0, r0+n) from the source and decodes them into dst.
func (m *Matrix) readRows(r0, n int, raw []byte, dst []float32) error {
	if err := m.t.ReadRows(int64(r0), int64(n), raw); err != nil {
		return err
	}
	if err := m.decode(raw, dst); err != nil {
		return fmt.Errorf("tensor %s: rows [%d,%d): %w", m.Name, r0, r0+n, err)
	}
	return nil
}

// Row writes row r of the matrix, as float32, into dst (len Cols).
func (m *Matrix) Row(r int, dst []float32) error {
	if r < 0 || r >= m.Rows {
		return fmt.Errorf("tensor %s: row %d outside [0,%d)", m.Name, r, m.Rows)
	}
	if len(dst) != m.Cols {
		return fmt.Errorf("tensor %s: row buffer of %d values for %d columns", m.Name, len(dst), m.Cols)
	}
	if m.cached != nil {
		copy(dst, m.cached[r*m.Cols:])
		return nil
	}
	return m.readRows(r, 1, make([]byte, m.rowBytes), dst)
}

// rows writes the rows listed in ids into dst (len(ids)×Cols), reading and
// decoding each from the source (or copying it from the cache).
func (m *Matrix) rows(ids []int32, dst []float32) error {
	var raw []byte
	if m.cached == nil {
		raw = make([]byte, m.rowBytes)
	}
	for i, id := range ids {
		r := int(id)
		if r < 0 || r >= m.Rows {
			return fmt.Errorf("tensor %s: row %d outside [0,%d)", m.Name, r, m.Rows)
		}
		d := dst[i*m.Cols : (i+1)*m.Cols]
		if m.cached != nil {
			copy(d, m.cached[r*m.Cols:])
		} else if err := m.readRows(r, 1, raw, d); err != nil {
			return err
		}
	}
	return nil
}

// scratch is one worker's buffers for Mul: raw bytes and decoded floats of
// chunkRows rows.
type scratch struct {
	raw []byte
	f32 []float32
}

var scratchPool sync.Pool

func getScratch(rawBytes, floats int) *scratch {
	s, _ := scratchPool.Get().(*scratch)
	if s == nil {
		s = &scratch{}
	}
	if cap(s.raw) < rawBytes {
		s.raw = make([]byte, rawBytes)
	}
	if cap(s.f32) < floats {
		s.f32 = make([]float32, floats)
	}
	s.raw, s.f32 = s.raw[:rawBytes], s.f32[:floats]
	return s
}

// Mul computes the product of the matrix with n activation rows:
//
//	out[b*Rows+r] = Σ_c W[r][c] · x[b*Cols+c]   for b < n, r < Rows
//
// x holds n rows of Cols float32 values and out n rows of Rows values.
// Each output is a float64 sum of exact products in a fixed order (see
// dot.go), rounded to float32 once, so results depend neither on the number
// of workers nor on the CPU. Work is split over chunks of weight rows among
// workers goroutines (<= 0 means 1); each chunk is dequantized once for the
// whole batch.
func (m *Matrix) Mul(x []float32, n int, out []float32, workers int) error {
	return m.mul(x, n, out, workers, nil)
}

// mul is Mul with a caller-provided buffer for the float64 copy of x
// (grown when too small).
func (m *Matrix) mul(x []float32, n int, out []float32, workers int, xd *[]float64) error {
	if n <= 0 {
		return nil
	}
	if len(x) < n*m.Cols || len(out) < n*m.Rows {
		return fmt.Errorf("tensor %s: multiply of %d rows needs %d inputs and %d outputs, have %d and %d",
			m.Name, n, n*m.Cols, n*m.Rows, len(x), len(out))
	}
	var xs []float64
	if xd != nil && cap(*xd) >= n*m.Cols {
		xs = (*xd)[:n*m.Cols]
	} else {
		xs = make([]float64, n*m.Cols)
		if xd != nil {
			*xd = xs
		}
	}
	for i, v := range x[:n*m.Cols] {
		xs[i] = float64(v)
	}
	nchunks := (m.Rows + chunkRows - 1) / chunkRows
	var firstErr error
	var errOnce sync.Once
	var next atomic.Int64
	work := func() {
		var s *scratch
		if m.cached == nil {
			s = getScratch(chunkRows*m.rowBytes, chunkRows*m.Cols)
			defer scratchPool.Put(s)
		}
		for {
			k := int(next.Add(1) - 1)
			if k >= nchunks {
				return
			}
			r0 := k * chunkRows
			rn := min(chunkRows, m.Rows-r0)
			var w []float32
			if m.cached != nil {
				w = m.cached[r0*m.Cols : (r0+rn)*m.Cols]
			} else {
				w = s.f32[:rn*m.Cols]
				if err := m.readRows(r0, rn, s.raw[:rn*m.rowBytes], w); err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(nchunks)) // stop the other workers early
					return
				}
			}
			mulChunk(w, rn, m.Cols, xs, n, out, m.Rows, r0)
		}
	}
	parallel(min(workers, nchunks, split(int64(n)*int64(m.Rows)*int64(m.Cols))), work)
	return firstErr
}

// minWork is the least work (in multiply-adds or similar inner-loop steps)
// worth handing to another goroutine: waking one costs microseconds, far
// more on a loaded machine, so single-token steps stay mostly serial.
const minWork = 1 << 18

// split returns how many goroutines work units of work deserve.
func split(work int64) int {
	return int(max(1, min(1<<20, work/minWork)))
}

// parallel runs fn on w goroutines (the caller's included) and waits.
func parallel(w int, fn func()) {
	if w <= 1 {
		fn()
		return
	}
	var wg sync.WaitGroup
	wg.Add(w - 1)
	for i := 0; i < w-1; i++ {
		go func() { defer wg.Done(); fn() }()
	}
	fn()
	wg.Wait()
}

// parallelFor calls fn(i) for i in [0, n) spread over w goroutines.
func parallelFor(n, w int, fn func(i int)) {
	var next atomic.Int64
	parallel(min(w, n), func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(i)
		}
	})
}

// mulChunk multiplies rn weight rows w (rn×cols, global rows r0..) with n
// activations xd (n×cols) into out (n×rows). Whole groups of four
// activations go two weight rows at a time, the rest four weight rows at a
// time, so that at least four independent accumulators hide the
// floating-point add latency; each accumulator still sums its own products
// in column order, so the tiling never changes a result.
func mulChunk(w []float32, rn, cols int, xd []float64, n int, out []float32, rows, r0 int) {
	nb4 := n &^ 3
	row := func(r int) []float32 { return w[r*cols : (r+1)*cols] }
	act := func(b int) []float64 { return xd[b*cols : (b+1)*cols] }
	for r := 0; r < rn && nb4 > 0; r += 2 {
		for b := 0; b < nb4; b += 4 {
			if r+1 < rn {
				a := dot2x4(row(r), row(r+1), act(b), act(b+1), act(b+2), act(b+3))
				for j := 0; j < 4; j++ {
					out[(b+j)*rows+r0+r] = float32(a[2*j])
					out[(b+j)*rows+r0+r+1] = float32(a[2*j+1])
				}
			} else {
				a := dot1x4(row(r), act(b), act(b+1), act(b+2), act(b+3))
				for j := 0; j < 4; j++ {
					out[(b+j)*rows+r0+r] = float32(a[j])
				}
			}
		}
	}
	for b := nb4; b < n; b++ {
		r := 0
		for ; r+4 <= rn; r += 4 {
			a := dot4x1(row(r), row(r+1), row(r+2), row(r+3), act(b))
			for j := 0; j < 4; j++ {
				out[b*rows+r0+r+j] = float32(a[j])
			}
		}
		for ; r < rn; r++ {
			out[b*rows+r0+r] = float32(dot1x1(row(r), act(b)))
		}
	}
}

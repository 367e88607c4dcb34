package quantize

import (
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/gemmaconv/gemmaconv/ir"
)

// ConvertOptions tunes Convert.
type ConvertOptions struct {
	// Threads is the number of workers that quantize rows; 0 means all cores.
	// The output bytes do not depend on it.
	Threads int
	// Imatrix maps a canonical tensor name to its importance weights (one
	// per column). Tensors without an entry are quantized unweighted.
	Imatrix map[string][]float32
	// ChunkBytes bounds the output produced per step (and so the working
	// set per tensor); 0 means 8 MiB.
	ChunkBytes int
}

// Convert returns a model whose tensors hold the types in types (tensors
// not named keep theirs). Nothing is computed now: each converted tensor's
// Source decodes, converts and encodes row chunks when a writer reads it,
// so memory stays at a few chunks whatever the model size. A tensor whose
// type is unchanged is passed through byte for byte.
func Convert(m *ir.Model, types map[string]ir.DType, opts ConvertOptions) (*ir.Model, error) {
	out := m.Derive()
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	chunk := opts.ChunkBytes
	if chunk <= 0 {
		chunk = 8 << 20
	}
	for i, t := range out.Tensors {
		dst, ok := types[t.Name]
		if !ok || dst == t.DType {
			continue
		}
		if _, err := ir.RowBytes(dst, t.Cols()); err != nil {
			return nil, fmt.Errorf("tensor %s: cannot store as %s: %w", t.Name, dst, err)
		}
		if !canDecode(t.DType) {
			return nil, fmt.Errorf("tensor %s: no decoder for its type %s", t.Name, t.DType)
		}
		if !canEncode(dst) {
			return nil, fmt.Errorf("tensor %s: no quantizer for type %s", t.Name, dst)
		}
		im := opts.Imatrix[t.Name]
		if im != nil && int64(len(im)) != t.Cols() {
			return nil, fmt.Errorf("tensor %s: importance vector has %d values for rows of %d", t.Name, len(im), t.Cols())
		}
		out.Tensors[i] = &ir.Tensor{Name: t.Name, DType: dst, Shape: append([]int64(nil), t.Shape...),
			Source: &convertSource{src: t, dst: dst, imatrix: im, threads: threads, chunkBytes: chunk}}
	}
	return out, nil
}

func canDecode(t ir.DType) bool {
	switch t {
	case ir.F32, ir.F16, ir.BF16, ir.F64:
		return true
	}
	k, ok := Lookup(t)
	return ok && k.Dequantize != nil
}

func canEncode(t ir.DType) bool {
	if t == ir.F32 {
		return true
	}
	k, ok := Lookup(t)
	return ok && k.Quantize != nil
}

// DecodeRows widens whole rows of any decodable type to float32.
func DecodeRows(t ir.DType, src []byte, dst []float32) error {
	switch t {
	case ir.F32, ir.F16, ir.BF16, ir.F64:
		return ir.DecodeFloats(t, src, dst)
	}
	_, err := DequantizeRows(t, src, dst)
	return err
}

// EncodeRows stores float32 rows of ncols values as type t.
func EncodeRows(t ir.DType, src []float32, ncols int, imatrix []float32, dst []byte) error {
	if t == ir.F32 {
		if len(dst) < 4*len(src) {
			return fmt.Errorf("encode: output buffer %d bytes, need %d", len(dst), 4*len(src))
		}
		ir.EncodeF32(src, dst)
		return nil
	}
	_, err := QuantizeRows(t, src, ncols, imatrix, dst)
	return err
}

// convertSource produces a tensor's bytes in another type, one chunk of
// rows at a time. It keeps the last chunk so a writer reading sequentially
// in pieces that do not align with rows computes each row once.
type convertSource struct {
	src        *ir.Tensor
	dst        ir.DType
	imatrix    []float32
	threads    int
	chunkBytes int

	mu   sync.Mutex
	row0 int64  // first row held in buf
	buf  []byte // encoded rows [row0, row0+len(buf)/rowBytes)
}

func (s *convertSource) rowBytes() int64 { n, _ := ir.RowBytes(s.dst, s.src.Cols()); return n }

// ReadAt implements io.ReaderAt.
func (s *convertSource) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rb := s.rowBytes()
	total := rb * s.src.Rows()
	if off < 0 || off > total {
		return 0, fmt.Errorf("tensor %s: offset %d outside 0..%d", s.src.Name, off, total)
	}
	n := 0
	for n < len(p) && off < total {
		row := off / rb
		have := int64(len(s.buf)) / rb
		if row < s.row0 || row >= s.row0+have {
			if err := s.fill(row); err != nil {
				return n, err
			}
		}
		c := copy(p[n:], s.buf[off-s.row0*rb:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill computes the chunk of rows starting at row, splitting it among the
// workers by fixed row ranges so the bytes never depend on thread count.
func (s *convertSource) fill(row int64) error {
	cols := s.src.Cols()
	rb := s.rowBytes()
	srcRB := s.src.RowBytes()
	per := int64(s.chunkBytes) / max(rb, srcRB, 4*cols)
	per = max(per, 1)
	nrows := min(per, s.src.Rows()-row)
	if cap(s.buf) < int(nrows*rb) {
		s.buf = make([]byte, nrows*rb)
	}
	s.buf = s.buf[:nrows*rb]
	s.row0 = row

	raw := make([]byte, nrows*srcRB)
	if err := s.src.ReadRows(row, nrows, raw); err != nil {
		return err
	}
	// The source rows are copied out; drop their pages (mmap) now.
	s.src.ReleaseRange(row*srcRB, nrows*srcRB)
	workers := int64(s.threads)
	step := (nrows + workers - 1) / workers
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := int64(0); w < workers; w++ {
		a, b := w*step, min((w+1)*step, nrows)
		if a >= b {
			break
		}
		wg.Add(1)
		go func(w, a, b int64) {
			defer wg.Done()
			vals := make([]float32, (b-a)*cols)
			if err := DecodeRows(s.src.DType, raw[a*srcRB:b*srcRB], vals); err != nil {
				errs[w] = fmt.Errorf("tensor %s: rows %d..%d: %w", s.src.Name, row+a, row+b, err)
				return
			}
			if err := EncodeRows(s.dst, vals, int(cols), s.imatrix, s.buf[a*rb:b*rb]); err != nil {
				errs[w] = fmt.Errorf("tensor %s: rows %d..%d: %w", s.src.Name, row+a, row+b, err)
			}
		}(w, a, b)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			s.buf = s.buf[:0]
			return err
		}
	}
	return nil
}

// ReleaseRange is a no-op: chunks are recomputed on demand and the
// source's pages are released as each chunk is read. It exists so the
// writer's per-chunk hint is not an error.
func (s *convertSource) ReleaseRange(off, n int64) {}

// Release drops the cached chunk and passes the hint to the source tensor.
func (s *convertSource) Release() {
	s.mu.Lock()
	s.buf = nil
	s.mu.Unlock()
	s.src.Release()
}

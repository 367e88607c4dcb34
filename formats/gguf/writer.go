package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/gemmaconv/gemmaconv/internal/atomicfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// WriteOptions tune WriteFile and Write.
type WriteOptions struct {
	// Progress, if set, is called after each chunk of tensor data with the
	// bytes written so far and the total.
	Progress func(doneBytes, totalBytes int64)
	// Alignment of tensor data: a power of two. 0 means general.alignment
	// from the metadata, or DefaultAlignment (32). A value other than 32
	// is recorded as general.alignment, as ggml requires.
	Alignment int
}

// chunkBytes is the target size of one read from a tensor source: large
// enough for sequential I/O, small enough that the buffer stays a few MB.
const chunkBytes = 4 << 20

// WriteFile writes a GGUF v3 file with the given metadata (in order) and
// tensors (in order, IR shapes). Tensor data is streamed from each
// Source in row-aligned chunks of a few MB, each tensor read once, front
// to back. The file is written under a temporary name in path's directory
// and renamed into place after an fsync; on any error the temporary file
// is removed, so path is either the complete new file or untouched.
func WriteFile(path string, kvs []ir.KV, tensors []*ir.Tensor, opts WriteOptions) error {
	kvs, align, err := prepareKV(kvs, opts.Alignment)
	if err != nil {
		return fmt.Errorf("gguf: %s: %w", path, err)
	}
	infos, total, err := layout(tensors, align)
	if err != nil {
		return fmt.Errorf("gguf: %s: %w", path, err)
	}

	tmp, err := atomicfile.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer tmp.Abort()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := encodeFile(w, kvs, tensors, infos, total, align, opts.Progress); err != nil {
		return fmt.Errorf("gguf: %s: %w", path, err)
	}
	if err := tmp.Commit(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

// encodeFile writes the whole file to w and flushes it.
func encodeFile(w *bufio.Writer, kvs []ir.KV, tensors []*ir.Tensor, infos []*TensorInfo, total, align int64, progress func(int64, int64)) error {
	e := &encoder{w: w}
	e.raw([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.Key)
		e.value(kv.Value, true)
	}
	for _, ti := range infos {
		e.str(ti.Name)
		e.u32(uint32(len(ti.Dims)))
		for _, d := range ti.Dims {
			e.u64(uint64(d))
		}
		e.u32(uint32(ti.Type))
		e.u64(uint64(ti.Offset))
	}
	e.pad(align)
	if e.err != nil {
		return e.err
	}
	var buf []byte
	var done int64
	for i, t := range tensors {
		ti := infos[i]
		if e.n-e.dataStart != ti.Offset {
			return fmt.Errorf("internal error: tensor %s at %d, planned %d", t.Name, e.n-e.dataStart, ti.Offset)
		}
		row := t.RowBytes()
		chunk := max(chunkBytes/row, 1) * row
		if n := min(chunk, ti.Size); int64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		for off := int64(0); off < ti.Size; {
			n := min(chunk, ti.Size-off)
			p := buf[:n]
			got, rerr := t.Source.ReadAt(p, off)
			if got != len(p) && rerr == nil {
				rerr = io.ErrUnexpectedEOF
			}
			if got != len(p) || (rerr != nil && !errors.Is(rerr, io.EOF)) {
				return fmt.Errorf("tensor %s: reading bytes [%d,%d): %w", t.Name, off, off+n, rerr)
			}
			e.raw(p)
			if e.err != nil {
				return e.err
			}
			// Drop what was just copied so resident memory stays at one
			// chunk, not one tensor (an embedding can be a gigabyte).
			t.ReleaseRange(off, n)
			off += n
			done += n
			if progress != nil {
				progress(done, total)
			}
		}
		t.Release()
		e.pad(align)
	}
	if e.err != nil {
		return e.err
	}
	return w.Flush()
}

// prepareKV checks the metadata and settles the alignment, adding
// general.alignment when it is not the default.
func prepareKV(kvs []ir.KV, optAlign int) ([]ir.KV, int64, error) {
	seen := make(map[string]bool, len(kvs))
	align := int64(0)
	for _, kv := range kvs {
		if kv.Key == "" {
			return nil, 0, errors.New("metadata key is empty")
		}
		if len(kv.Key) > MaxKeyLength {
			return nil, 0, fmt.Errorf("metadata key %.40q... is %d bytes, over the limit of %d", kv.Key, len(kv.Key), MaxKeyLength)
		}
		if seen[kv.Key] {
			return nil, 0, fmt.Errorf("metadata key %q appears twice", kv.Key)
		}
		seen[kv.Key] = true
		if err := checkValue(kv.Value, 0); err != nil {
			return nil, 0, fmt.Errorf("metadata key %q: %w", kv.Key, err)
		}
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.(uint32)
			if !ok {
				return nil, 0, fmt.Errorf("general.alignment is %T, must be uint32", kv.Value)
			}
			align = int64(a)
		}
	}
	switch {
	case optAlign != 0 && align != 0 && int64(optAlign) != align:
		return nil, 0, fmt.Errorf("alignment option %d conflicts with general.alignment %d", optAlign, align)
	case optAlign != 0 && align == 0:
		align = int64(optAlign)
		if align != DefaultAlignment {
			kvs = append(append([]ir.KV(nil), kvs...), ir.KV{Key: "general.alignment", Value: uint32(align)})
		}
	case align == 0:
		align = DefaultAlignment
	}
	if align <= 0 || align&(align-1) != 0 || align > MaxAlignment {
		return nil, 0, fmt.Errorf("alignment %d is not a power of two up to %d", align, MaxAlignment)
	}
	return kvs, align, nil
}

// checkValue rejects values the reader would refuse, so every file
// WriteFile produces reads back.
func checkValue(v any, depth int) error {
	t, _, err := TypeOf(v)
	if err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		if len(x) > MaxStringLength {
			return fmt.Errorf("string of %d bytes is over the limit of %d", len(x), MaxStringLength)
		}
	case []string:
		for _, s := range x {
			if len(s) > MaxStringLength {
				return fmt.Errorf("string of %d bytes is over the limit of %d", len(s), MaxStringLength)
			}
		}
	case []any:
		if depth+1 >= MaxArrayDepth {
			return fmt.Errorf("arrays nested more than %d deep", MaxArrayDepth)
		}
		for _, e := range x {
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	}
	if t == TypeArray && ArrayLen(v) > MaxArrayLength {
		return fmt.Errorf("array of %d elements is over the limit of %d", ArrayLen(v), MaxArrayLength)
	}
	return nil
}

// layout validates the tensors and computes each one's info and offset.
func layout(tensors []*ir.Tensor, align int64) ([]*TensorInfo, int64, error) {
	infos := make([]*TensorInfo, len(tensors))
	seen := make(map[string]bool, len(tensors))
	var off, total int64
	for i, t := range tensors {
		if t == nil {
			return nil, 0, fmt.Errorf("tensor %d is nil", i)
		}
		if t.Name == "" || len(t.Name) >= MaxTensorName {
			return nil, 0, fmt.Errorf("tensor name %q must have 1 to %d bytes", t.Name, MaxTensorName-1)
		}
		if seen[t.Name] {
			return nil, 0, fmt.Errorf("tensor %s appears twice", t.Name)
		}
		seen[t.Name] = true
		if !t.DType.Known() {
			return nil, 0, fmt.Errorf("tensor %s: unknown type %d", t.Name, uint32(t.DType))
		}
		if len(t.Shape) == 0 || len(t.Shape) > MaxDims {
			return nil, 0, fmt.Errorf("tensor %s: %d dimensions (1 to %d supported)", t.Name, len(t.Shape), MaxDims)
		}
		n := uint64(1)
		for _, d := range t.Shape {
			if d <= 0 {
				return nil, 0, fmt.Errorf("tensor %s: dimension %d in shape %v", t.Name, d, t.Shape)
			}
			hi, lo := bits.Mul64(n, uint64(d))
			if hi != 0 || lo > math.MaxInt64 {
				return nil, 0, fmt.Errorf("tensor %s: shape %v overflows", t.Name, t.Shape)
			}
			n = lo
		}
		if t.Cols()%int64(t.DType.BlockSize()) != 0 {
			return nil, 0, fmt.Errorf("tensor %s: row of %d elements is not a multiple of %s's block size %d", t.Name, t.Cols(), t.DType, t.DType.BlockSize())
		}
		size, ok := byteSize(t.DType, t.Cols(), int64(n)/t.Cols())
		if !ok || size > math.MaxInt64/2 {
			return nil, 0, fmt.Errorf("tensor %s: size overflows", t.Name)
		}
		if t.Source == nil {
			return nil, 0, fmt.Errorf("tensor %s: no data source", t.Name)
		}
		dims := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			dims[len(dims)-1-j] = d
		}
		infos[i] = &TensorInfo{Name: t.Name, Type: t.DType, Dims: dims, Offset: off, Size: size}
		total += size
		if off > math.MaxInt64/2-size {
			return nil, 0, fmt.Errorf("tensor %s: data section overflows", t.Name)
		}
		off = alignUp(off+int64(size), align)
	}
	return infos, total, nil
}

// encoder writes little-endian fields, remembering the first error and
// the number of bytes written.
type encoder struct {
	w         *bufio.Writer
	n         int64
	dataStart int64
	err       error
	scratch   [8]byte
}

func (e *encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	var n int
	n, e.err = e.w.Write(b)
	e.n += int64(n)
}

func (e *encoder) u8(v uint8) { e.scratch[0] = v; e.raw(e.scratch[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.scratch[:], v)
	e.raw(e.scratch[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.scratch[:], v)
	e.raw(e.scratch[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.scratch[:], v)
	e.raw(e.scratch[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		var n int
		n, e.err = e.w.WriteString(s)
		e.n += int64(n)
	}
}

// pad writes zeros up to the next multiple of align and, the first time,
// records where the data section starts.
func (e *encoder) pad(align int64) {
	var zeros [64]byte
	for r := alignUp(e.n, align) - e.n; r > 0 && e.err == nil; {
		k := min(r, int64(len(zeros)))
		e.raw(zeros[:k])
		r -= k
	}
	if e.dataStart == 0 {
		e.dataStart = e.n
	}
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// value writes v, preceded by its type when typed is true (array elements
// are untyped; the array header carries their type).
func (e *encoder) value(v any, typed bool) {
	t, et, err := TypeOf(v)
	if err != nil {
		if e.err == nil {
			e.err = err
		}
		return
	}
	if typed {
		e.u32(uint32(t))
	}
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		e.u8(boolByte(x))
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	default:
		e.u32(uint32(et))
		e.u64(uint64(ArrayLen(v)))
		e.array(v)
	}
}

func (e *encoder) array(v any) {
	switch a := v.(type) {
	case []uint8:
		e.raw(a)
	case []int8:
		for _, x := range a {
			e.u8(uint8(x))
		}
	case []uint16:
		for _, x := range a {
			e.u16(x)
		}
	case []int16:
		for _, x := range a {
			e.u16(uint16(x))
		}
	case []uint32:
		for _, x := range a {
			e.u32(x)
		}
	case []int32:
		for _, x := range a {
			e.u32(uint32(x))
		}
	case []float32:
		for _, x := range a {
			e.u32(math.Float32bits(x))
		}
	case []bool:
		for _, x := range a {
			e.u8(boolByte(x))
		}
	case []string:
		for _, x := range a {
			e.str(x)
		}
	case []uint64:
		for _, x := range a {
			e.u64(x)
		}
	case []int64:
		for _, x := range a {
			e.u64(uint64(x))
		}
	case []float64:
		for _, x := range a {
			e.u64(math.Float64bits(x))
		}
	case []any:
		for _, x := range a {
			e.value(x, false)
		}
	}
}

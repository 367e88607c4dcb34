package gguf

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/gemmaconv/gemmaconv/internal/mmapfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// Magic is the four bytes every GGUF file starts with.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Limits the reader enforces on top of "no field may claim more bytes than
// the file has left". They are far above anything a real model uses and
// keep a hostile header from making the reader allocate or loop without
// bound.
const (
	// MaxKeyLength is the GGUF spec's limit on a key's length.
	MaxKeyLength = 1<<16 - 1
	// MaxStringLength is ggml's GGUF_MAX_STRING_LENGTH.
	MaxStringLength = 1 << 30
	// MaxArrayLength caps the elements of one metadata array (Gemma 3's
	// vocabulary has 262,208).
	MaxArrayLength = 1 << 28
	// MaxArrayDepth caps how deeply arrays may nest.
	MaxArrayDepth = 8
	// MaxKV and MaxTensors cap the header's counts.
	MaxKV      = 1 << 20
	MaxTensors = 1 << 20
	// MaxTensorName is ggml's GGML_MAX_NAME: names must be shorter.
	MaxTensorName = 64
	// MaxAlignment caps general.alignment.
	MaxAlignment = 1 << 30
	// MaxDims is ggml's GGML_MAX_DIMS.
	MaxDims = 4
)

// minKVSize and minTensorInfoSize are the fewest bytes one metadata entry
// and one tensor info can take: a one-byte key or name with its 8-byte
// length, a 4-byte type and a one-byte value; a name, one dimension, a
// type and an offset.
const (
	minKVSize         = 8 + 1 + 4 + 1
	minTensorInfoSize = 8 + 1 + 4 + 8 + 4 + 8
)

// Error is a malformed-file error. It names the file, the metadata key or
// tensor being read (or "header") and the byte offset of the bad field.
type Error struct {
	Path   string
	Item   string
	Offset int64
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("gguf: %s: %s at byte %d: %s", e.Path, e.Item, e.Offset, e.Msg)
}

// File is an open GGUF file: its metadata in file order and its tensor
// infos. Tensor data stays on disk (memory-mapped where the platform
// allows) until a Window is read.
type File struct {
	Path    string
	Version uint32
	// KV is the metadata in file order. Values have the Go types listed
	// at ir.KV; nested arrays are []any.
	KV []ir.KV
	// Tensors are the tensor infos in file order.
	Tensors []*TensorInfo
	// Alignment is general.alignment or DefaultAlignment.
	Alignment int64
	// DataOffset is the file offset of the data section.
	DataOffset int64
	// Size is the file's size in bytes.
	Size int64

	kvIndex     map[string]int
	kvOffsets   []int64 // file offset of each entry's key
	tensorIndex map[string]int
	src         *mmapfile.File // the file's bytes: mapped, pread, or given to Parse
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name string
	Type ir.DType
	// Dims is ggml's ne[]: innermost dimension first.
	Dims []int64
	// Offset is relative to the data section.
	Offset int64
	// Size is the data's size in bytes.
	Size int64
	// InfoOffset is the file offset where the tensor's info begins.
	InfoOffset int64

	offsetAt int64 // file offset of the info's data-offset field
}

// Shape returns the dimensions outermost first, the IR's order.
func (t *TensorInfo) Shape() []int64 {
	s := make([]int64, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = d
	}
	return s
}

// NumElements is the product of the dimensions.
func (t *TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Lookup returns the value of a metadata key.
func (f *File) Lookup(key string) (any, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return nil, false
	}
	return f.KV[i].Value, true
}

// KeyOffset returns the file offset where a metadata entry begins, or -1.
func (f *File) KeyOffset(key string) int64 {
	i, ok := f.kvIndex[key]
	if !ok || i >= len(f.kvOffsets) {
		return -1
	}
	return f.kvOffsets[i]
}

// Tensor returns the info of the named tensor, or nil.
func (f *File) Tensor(name string) *TensorInfo {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil
	}
	return f.Tensors[i]
}

// Window returns a lazy reader of t's data.
func (f *File) Window(t *TensorInfo) *Window {
	return f.src.Window(fmt.Sprintf("gguf: %s: tensor %s", f.Path, t.Name), f.DataOffset+t.Offset, t.Size)
}

// Close unmaps and closes the file. Windows must not be used afterwards.
func (f *File) Close() error { return f.src.Close() }

// Window is one tensor's bytes in an open File. It implements io.ReaderAt,
// ir.Releaser and ir.RangeReleaser, and Bytes gives the mapped data.
type Window = mmapfile.Window

// Open reads and validates a GGUF file's header and maps its data.
func Open(path string) (*File, error) {
	src, err := mmapfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	size := src.Size()
	if size < 24 {
		src.Close()
		return nil, &Error{path, "header", 0, fmt.Sprintf("file has %d bytes, fewer than a GGUF header's 24", size)}
	}
	f := &File{Path: path, Size: size, src: src}
	if err := f.parse(src); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Parse validates a GGUF image held in memory, for tools and tests that
// have the bytes already. Windows of the result read from data.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Path: name, Size: int64(len(data)), src: mmapfile.FromBytes(data)}
	if len(data) < 24 {
		return nil, &Error{name, "header", 0, fmt.Sprintf("file has %d bytes, fewer than a GGUF header's 24", len(data))}
	}
	if err := f.parse(f.src); err != nil {
		return nil, err
	}
	return f, nil
}

// parser reads fields sequentially, checking each against the bytes left.
type parser struct {
	f    *File
	src  io.ReaderAt
	off  int64
	item string
	buf  [8]byte
}

func (p *parser) errf(off int64, format string, args ...any) error {
	return &Error{p.f.Path, p.item, off, fmt.Sprintf(format, args...)}
}

func (p *parser) remaining() int64 { return p.f.Size - p.off }

// read returns the next n bytes; n must have been checked by the caller
// or be small.
func (p *parser) read(dst []byte, what string) error {
	if int64(len(dst)) > p.remaining() {
		return p.errf(p.off, "%s needs %d bytes, the file has %d left (truncated?)", what, len(dst), p.remaining())
	}
	n, err := p.src.ReadAt(dst, p.off)
	if n < len(dst) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return p.errf(p.off, "reading %s: %v", what, err)
	}
	p.off += int64(len(dst))
	return nil
}

func (p *parser) u8(what string) (uint8, error) {
	err := p.read(p.buf[:1], what)
	return p.buf[0], err
}

func (p *parser) u16(what string) (uint16, error) {
	err := p.read(p.buf[:2], what)
	return binary.LittleEndian.Uint16(p.buf[:2]), err
}

func (p *parser) u32(what string) (uint32, error) {
	err := p.read(p.buf[:4], what)
	return binary.LittleEndian.Uint32(p.buf[:4]), err
}

func (p *parser) u64(what string) (uint64, error) {
	err := p.read(p.buf[:8], what)
	return binary.LittleEndian.Uint64(p.buf[:8]), err
}

// str reads a length-prefixed string of at most limit bytes.
func (p *parser) str(what string, limit uint64) (string, error) {
	at := p.off
	n, err := p.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", p.errf(at, "%s length %d exceeds the limit of %d", what, n, limit)
	}
	if n > uint64(p.remaining()) {
		return "", p.errf(at, "%s length %d exceeds the %d bytes left in the file", what, n, p.remaining())
	}
	b := make([]byte, n)
	if err := p.read(b, what); err != nil {
		return "", err
	}
	return string(b), nil
}

func (f *File) parse(src io.ReaderAt) error {
	p := &parser{f: f, src: src, item: "header"}
	var magic [4]byte
	if err := p.read(magic[:], "magic"); err != nil {
		return err
	}
	if string(magic[:]) != Magic {
		return p.errf(0, "bad magic %q (want %q): not a GGUF file", magic[:], Magic)
	}
	v, err := p.u32("version")
	if err != nil {
		return err
	}
	switch {
	case v == 2 || v == 3:
	case v&0xFFFF == 0 && v != 0:
		return p.errf(4, "version field 0x%08x looks byte-swapped: big-endian GGUF files are not supported", v)
	case v == 1:
		return p.errf(4, "GGUF version 1 is not supported (it predates 64-bit counts); reconvert the model")
	default:
		return p.errf(4, "unsupported GGUF version %d (2 and 3 are supported)", v)
	}
	f.Version = v
	at := p.off
	nt, err := p.u64("tensor count")
	if err != nil {
		return err
	}
	nkv, err := p.u64("metadata count")
	if err != nil {
		return err
	}
	// Every entry takes some bytes, so counts the rest of the file cannot
	// hold are corrupt; checking here bounds every loop below.
	rem := uint64(p.remaining())
	if nt > MaxTensors || nt > rem/minTensorInfoSize {
		return p.errf(at, "tensor count %d is impossible: the limit is %d and the %d bytes left hold at most %d", nt, MaxTensors, rem, rem/minTensorInfoSize)
	}
	if nkv > MaxKV || nkv > rem/minKVSize {
		return p.errf(at+8, "metadata count %d is impossible: the limit is %d and the %d bytes left hold at most %d", nkv, MaxKV, rem, rem/minKVSize)
	}
	if nt*minTensorInfoSize+nkv*minKVSize > rem {
		return p.errf(at, "%d tensor infos and %d metadata entries cannot fit in the %d bytes left", nt, nkv, rem)
	}

	f.kvIndex = make(map[string]int, min(nkv, 1024))
	f.KV = make([]ir.KV, 0, min(nkv, 1024))
	for i := uint64(0); i < nkv; i++ {
		p.item = fmt.Sprintf("metadata entry %d", i)
		at := p.off
		key, err := p.str("key", MaxKeyLength)
		if err != nil {
			return err
		}
		if key == "" {
			return p.errf(at, "empty key")
		}
		p.item = fmt.Sprintf("key %q", key)
		if j, dup := f.kvIndex[key]; dup {
			return p.errf(at, "duplicate key (first is entry %d)", j)
		}
		tat := p.off
		t, err := p.u32("value type")
		if err != nil {
			return err
		}
		if !ValueType(t).valid() {
			return p.errf(tat, "unknown value type %d", t)
		}
		val, err := p.value(ValueType(t), 0)
		if err != nil {
			return err
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, ir.KV{Key: key, Value: val})
		f.kvOffsets = append(f.kvOffsets, at)
	}

	f.Alignment = DefaultAlignment
	if i, ok := f.kvIndex["general.alignment"]; ok {
		p.item = `key "general.alignment"`
		a, ok := f.KV[i].Value.(uint32)
		if !ok {
			return p.errf(f.kvOffsets[i], "general.alignment is %T, must be uint32", f.KV[i].Value)
		}
		if a == 0 || a&(a-1) != 0 || a > MaxAlignment {
			return p.errf(f.kvOffsets[i], "alignment %d is not a power of two up to %d", a, MaxAlignment)
		}
		f.Alignment = int64(a)
	}

	f.tensorIndex = make(map[string]int, min(nt, 1024))
	f.Tensors = make([]*TensorInfo, 0, min(nt, 1024))
	for i := uint64(0); i < nt; i++ {
		p.item = fmt.Sprintf("tensor info %d", i)
		t, err := p.tensorInfo()
		if err != nil {
			return err
		}
		if j, dup := f.tensorIndex[t.Name]; dup {
			return p.errf(t.InfoOffset, "duplicate tensor name (first is tensor %d)", j)
		}
		f.tensorIndex[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	headerEnd := p.off
	f.DataOffset = alignUp(headerEnd, f.Alignment)
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > f.Size {
		p.item = "data section"
		return p.errf(headerEnd, "data section would start at byte %d, past the end of the %d-byte file", f.DataOffset, f.Size)
	}
	// ggml requires the tensors to be stored in info order, each at the
	// aligned end of the previous one.
	next := int64(0)
	var prev *TensorInfo
	dataSize := f.Size - f.DataOffset
	for _, t := range f.Tensors {
		p.item = fmt.Sprintf("tensor %q", t.Name)
		offAt := t.offsetAt
		if t.Offset%f.Alignment != 0 {
			return p.errf(offAt, "data offset %d is not a multiple of the alignment %d", t.Offset, f.Alignment)
		}
		if t.Offset < next {
			return p.errf(offAt, "data offset %d overlaps tensor %q, which ends at %d", t.Offset, prev.Name, prev.Offset+prev.Size)
		}
		if t.Offset > next {
			return p.errf(offAt, "data offset %d leaves a gap: expected %d (tensors must be stored consecutively)", t.Offset, next)
		}
		if t.Offset > dataSize || t.Size > dataSize-t.Offset {
			return p.errf(offAt, "data [%d, +%d) runs past the end of the file (the data section has %d bytes)", t.Offset, t.Size, dataSize)
		}
		next = alignUp(t.Offset+t.Size, f.Alignment)
		prev = t
	}
	return nil
}

// byteSize is the bytes of rows rows of cols elements of type t, false on
// overflow (ir.RowBytes does not check).
func byteSize(t ir.DType, cols, rows int64) (int64, bool) {
	hi, row := bits.Mul64(uint64(cols/int64(t.BlockSize())), uint64(t.TypeSize()))
	if hi != 0 || row > math.MaxInt64 {
		return 0, false
	}
	hi, lo := bits.Mul64(row, uint64(rows))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	return int64(lo), true
}

func alignUp(n, a int64) int64 {
	if r := n % a; r != 0 {
		return n + a - r
	}
	return n
}

func (p *parser) tensorInfo() (*TensorInfo, error) {
	t := &TensorInfo{InfoOffset: p.off}
	name, err := p.str("tensor name", MaxTensorName-1)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, p.errf(t.InfoOffset, "empty tensor name")
	}
	t.Name = name
	p.item = fmt.Sprintf("tensor %q", name)
	at := p.off
	nd, err := p.u32("dimension count")
	if err != nil {
		return nil, err
	}
	if nd == 0 || nd > MaxDims {
		return nil, p.errf(at, "%d dimensions (1 to %d supported)", nd, MaxDims)
	}
	t.Dims = make([]int64, nd)
	n := int64(1)
	for j := range t.Dims {
		at := p.off
		d, err := p.u64("dimension")
		if err != nil {
			return nil, err
		}
		if d == 0 || d > math.MaxInt64 {
			return nil, p.errf(at, "dimension %d has %d elements (must be positive)", j, int64(d))
		}
		hi, lo := bits.Mul64(uint64(n), d)
		if hi != 0 || lo > math.MaxInt64 {
			return nil, p.errf(at, "element count overflows at dimension %d (%v)", j, t.Dims[:j+1])
		}
		t.Dims[j] = int64(d)
		n = int64(lo)
	}
	at = p.off
	typ, err := p.u32("type")
	if err != nil {
		return nil, err
	}
	t.Type = ir.DType(typ)
	if !t.Type.Known() {
		return nil, p.errf(at, "unknown ggml type %d", typ)
	}
	if t.Dims[0]%int64(t.Type.BlockSize()) != 0 {
		return nil, p.errf(at, "row of %d elements is not a multiple of %s's block size %d", t.Dims[0], t.Type, t.Type.BlockSize())
	}
	size, ok := byteSize(t.Type, t.Dims[0], n/t.Dims[0])
	if !ok {
		return nil, p.errf(at, "size in bytes overflows (%v of %s)", t.Dims, t.Type)
	}
	lo := uint64(size)
	t.Size = int64(lo)
	at = p.off
	t.offsetAt = at
	off, err := p.u64("data offset")
	if err != nil {
		return nil, err
	}
	if off > math.MaxInt64 {
		return nil, p.errf(at, "data offset %d is out of range", off)
	}
	t.Offset = int64(off)
	return t, nil
}

// value reads one value of type t.
func (p *parser) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeUint8:
		return p.u8("uint8 value")
	case TypeInt8:
		v, err := p.u8("int8 value")
		return int8(v), err
	case TypeUint16:
		return p.u16("uint16 value")
	case TypeInt16:
		v, err := p.u16("int16 value")
		return int16(v), err
	case TypeUint32:
		return p.u32("uint32 value")
	case TypeInt32:
		v, err := p.u32("int32 value")
		return int32(v), err
	case TypeFloat32:
		v, err := p.u32("float32 value")
		return math.Float32frombits(v), err
	case TypeBool:
		at := p.off
		v, err := p.u8("bool value")
		if err != nil {
			return nil, err
		}
		if v > 1 {
			return nil, p.errf(at, "bool value %d is neither 0 nor 1", v)
		}
		return v == 1, nil
	case TypeString:
		return p.str("string value", MaxStringLength)
	case TypeUint64:
		return p.u64("uint64 value")
	case TypeInt64:
		v, err := p.u64("int64 value")
		return int64(v), err
	case TypeFloat64:
		v, err := p.u64("float64 value")
		return math.Float64frombits(v), err
	case TypeArray:
		return p.array(depth + 1)
	}
	return nil, p.errf(p.off, "unknown value type %d", t)
}

// array reads an array header and its elements.
func (p *parser) array(depth int) (any, error) {
	at := p.off
	if depth > MaxArrayDepth {
		return nil, p.errf(at, "arrays nested more than %d deep", MaxArrayDepth)
	}
	et, err := p.u32("array element type")
	if err != nil {
		return nil, err
	}
	t := ValueType(et)
	if !t.valid() {
		return nil, p.errf(at, "unknown array element type %d", et)
	}
	n, err := p.u64("array length")
	if err != nil {
		return nil, err
	}
	if n > MaxArrayLength {
		return nil, p.errf(at+4, "array length %d exceeds the limit of %d", n, MaxArrayLength)
	}
	if min := uint64(t.minSize()); n > uint64(p.remaining())/min {
		return nil, p.errf(at+4, "array of %d %s elements needs at least %d bytes, the file has %d left", n, t, n*min, p.remaining())
	}
	if sz := t.fixedSize(); sz > 0 {
		raw := make([]byte, int(n)*sz)
		if err := p.read(raw, "array data"); err != nil {
			return nil, err
		}
		return decodeArray(t, raw, int(n), at+12, p)
	}
	// Strings and nested arrays: the count was checked against the
	// smallest element, and each element is read before the next, so
	// memory grows only with bytes actually present.
	switch t {
	case TypeString:
		out := make([]string, 0, min(n, 1<<16))
		for i := uint64(0); i < n; i++ {
			s, err := p.str("array string", MaxStringLength)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	default: // TypeArray
		out := make([]any, 0, min(n, 1<<10))
		for i := uint64(0); i < n; i++ {
			v, err := p.array(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
}

func decodeArray(t ValueType, raw []byte, n int, at int64, p *parser) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return raw, nil
	case TypeInt8:
		a := make([]int8, n)
		for i := range a {
			a[i] = int8(raw[i])
		}
		return a, nil
	case TypeBool:
		a := make([]bool, n)
		for i := range a {
			if raw[i] > 1 {
				return nil, p.errf(at+int64(i), "bool element %d is %d, neither 0 nor 1", i, raw[i])
			}
			a[i] = raw[i] == 1
		}
		return a, nil
	case TypeUint16:
		a := make([]uint16, n)
		for i := range a {
			a[i] = le.Uint16(raw[2*i:])
		}
		return a, nil
	case TypeInt16:
		a := make([]int16, n)
		for i := range a {
			a[i] = int16(le.Uint16(raw[2*i:]))
		}
		return a, nil
	case TypeUint32:
		a := make([]uint32, n)
		for i := range a {
			a[i] = le.Uint32(raw[4*i:])
		}
		return a, nil
	case TypeInt32:
		a := make([]int32, n)
		for i := range a {
			a[i] = int32(le.Uint32(raw[4*i:]))
		}
		return a, nil
	case TypeFloat32:
		a := make([]float32, n)
		for i := range a {
			a[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return a, nil
	case TypeUint64:
		a := make([]uint64, n)
		for i := range a {
			a[i] = le.Uint64(raw[8*i:])
		}
		return a, nil
	case TypeInt64:
		a := make([]int64, n)
		for i := range a {
			a[i] = int64(le.Uint64(raw[8*i:]))
		}
		return a, nil
	case TypeFloat64:
		a := make([]float64, n)
		for i := range a {
			a[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return a, nil
	}
	return nil, p.errf(at, "unexpected element type %s", t)
}

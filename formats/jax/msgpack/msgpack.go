// Package msgpack reads flax.serialization msgpack files (the format of
// flax.serialization.to_bytes / msgpack_serialize) without loading array
// data: maps, lists and scalars are decoded, and each ndarray (msgpack
// extension type 1, a nested msgpack tuple of shape, dtype name and raw
// C-order bytes) is recorded as the byte offset and length of its data in
// the file. Arrays that flax split into chunks (a map with
// "__msgpack_chunked_array__") are reassembled as multi-segment arrays.
package msgpack

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Extension type codes flax uses.
const (
	extNDArray = 1
	extComplex = 2
	extScalar  = 3
)

// Limits on hostile input.
const (
	maxDepth     = 64
	maxStrLen    = 1 << 20 // map keys, dtype names
	maxRank      = 32
	maxBufferLen = 1 << 16 // look-ahead buffer
	// maxNodes bounds the decoded values (each costs ~200 bytes of memory
	// but as little as one byte of file); a Gemma tree has a few thousand.
	maxNodes = 1 << 20
)

// Kind is a decoded value's type.
type Kind int

// Value kinds.
const (
	Nil Kind = iota
	Bool
	Int
	Uint
	Float
	Str
	Bin
	List
	Map
	NDArray // ext 1 (or ext 3: a NumPy scalar, Shape empty)
	Ext     // other extension types, kept as a byte range
)

// Node is a decoded msgpack value. Byte strings, arrays and unknown
// extensions are not read: their position in the file is recorded.
type Node struct {
	Kind   Kind
	Offset int64 // where the value's encoding starts in the file

	Bool  bool
	Int   int64
	Uint  uint64
	Float float64
	Str   string
	List  []*Node
	Map   []Entry // in file order

	// Bin and Ext: the payload's range; Ext also its type.
	DataOffset, DataLen int64
	ExtType             int8

	// NDArray: shape and NumPy dtype name ("bfloat16", "float32", "int32").
	Shape []int64
	DType string
}

// Entry is one map entry. Keys that are not strings are rendered with
// strconv (ints) so that paths stay printable.
type Entry struct {
	Key   string
	Value *Node
}

// Get returns the map entry named key, or nil.
func (n *Node) Get(key string) *Node {
	if n == nil || n.Kind != Map {
		return nil
	}
	for _, e := range n.Map {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

// Error is a decoding error with the file and byte offset it occurred at.
type Error struct {
	File   string
	Offset int64
	Err    error
}

// Error formats the file, offset and cause.
func (e *Error) Error() string {
	return fmt.Sprintf("msgpack: %s: offset %d: %v", e.File, e.Offset, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// decoder reads msgpack through a small look-ahead buffer over an
// io.ReaderAt, so that skipping a multi-GiB array costs nothing.
type decoder struct {
	r    io.ReaderAt
	size int64
	file string
	pos  int64
	buf  []byte
	bOff int64 // file offset of buf[0]
	// nodes counts decoded values; shared with ext sub-decoders.
	nodes *int
}

func (d *decoder) errAt(off int64, format string, args ...any) error {
	return &Error{File: d.file, Offset: off, Err: fmt.Errorf(format, args...)}
}

// peek returns the next n bytes (n <= maxBufferLen) without consuming them.
func (d *decoder) peek(n int) ([]byte, error) {
	if int64(n) > d.size-d.pos {
		return nil, d.errAt(d.pos, "%d bytes needed, %d left in the file", n, d.size-d.pos)
	}
	if d.pos >= d.bOff && d.pos+int64(n) <= d.bOff+int64(len(d.buf)) {
		s := d.pos - d.bOff
		return d.buf[s : s+int64(n)], nil
	}
	want := int64(max(n, 4096))
	want = min(want, d.size-d.pos, maxBufferLen)
	if cap(d.buf) < int(want) {
		d.buf = make([]byte, want, max(want, 4096))
	}
	d.buf = d.buf[:want]
	m, err := d.r.ReadAt(d.buf, d.pos)
	if int64(m) < want && !(err == nil || err == io.EOF) {
		return nil, d.errAt(d.pos, "read: %w", err)
	}
	if m < n {
		return nil, d.errAt(d.pos, "file ends early (%d of %d bytes)", m, n)
	}
	d.buf = d.buf[:m]
	d.bOff = d.pos
	return d.buf[:n], nil
}

func (d *decoder) take(n int) ([]byte, error) {
	b, err := d.peek(n)
	if err == nil {
		d.pos += int64(n)
	}
	return b, err
}

func (d *decoder) u8() (uint8, error) {
	b, err := d.take(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (d *decoder) be(n int) (uint64, error) {
	b, err := d.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v, nil
}

// skip advances past n bytes, checking they exist.
func (d *decoder) skip(n int64) error {
	if n < 0 || n > d.size-d.pos {
		return d.errAt(d.pos, "%d bytes needed, %d left in the file", n, d.size-d.pos)
	}
	d.pos += n
	return nil
}

// Parse decodes the msgpack value that fills r (size bytes); file names
// it in errors.
func Parse(r io.ReaderAt, size int64, file string) (*Node, error) {
	d := &decoder{r: r, size: size, file: file, nodes: new(int)}
	n, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.pos != size {
		return nil, d.errAt(d.pos, "%d trailing bytes after the top-level value", size-d.pos)
	}
	return n, nil
}

// lengthOf reads a length or count field of n bytes.
func (d *decoder) length(n int) (int64, error) {
	v, err := d.be(n)
	if err != nil {
		return 0, err
	}
	if v > uint64(d.size) {
		return 0, d.errAt(d.pos-int64(n), "length %d exceeds the file size %d", v, d.size)
	}
	return int64(v), nil
}

func (d *decoder) value(depth int) (*Node, error) {
	if depth > maxDepth {
		return nil, d.errAt(d.pos, "nesting deeper than %d", maxDepth)
	}
	start := d.pos
	if *d.nodes++; *d.nodes > maxNodes {
		return nil, d.errAt(start, "more than %d values", maxNodes)
	}
	t, err := d.u8()
	if err != nil {
		return nil, err
	}
	n := &Node{Offset: start}
	switch {
	case t <= 0x7f:
		n.Kind, n.Int = Int, int64(t)
	case t >= 0xe0:
		n.Kind, n.Int = Int, int64(int8(t))
	case t >= 0x80 && t <= 0x8f:
		return n, d.mapBody(n, int64(t&0x0f), depth)
	case t >= 0x90 && t <= 0x9f:
		return n, d.listBody(n, int64(t&0x0f), depth)
	case t >= 0xa0 && t <= 0xbf:
		return n, d.str(n, int64(t&0x1f))
	default:
		switch t {
		case 0xc0:
			n.Kind = Nil
		case 0xc2, 0xc3:
			n.Kind, n.Bool = Bool, t == 0xc3
		case 0xc4, 0xc5, 0xc6:
			l, err := d.length(1 << (t - 0xc4))
			if err != nil {
				return nil, err
			}
			n.Kind, n.DataOffset, n.DataLen = Bin, d.pos, l
			return n, d.skip(l)
		case 0xc7, 0xc8, 0xc9:
			l, err := d.length(1 << (t - 0xc7))
			if err != nil {
				return nil, err
			}
			return n, d.ext(n, l, depth)
		case 0xca:
			v, err := d.be(4)
			n.Kind, n.Float = Float, float64(math.Float32frombits(uint32(v)))
			return n, err
		case 0xcb:
			v, err := d.be(8)
			n.Kind, n.Float = Float, math.Float64frombits(v)
			return n, err
		case 0xcc, 0xcd, 0xce, 0xcf:
			v, err := d.be(1 << (t - 0xcc))
			n.Kind, n.Uint = Uint, v
			if v <= math.MaxInt64 {
				n.Kind, n.Int = Int, int64(v)
			}
			return n, err
		case 0xd0, 0xd1, 0xd2, 0xd3:
			size := 1 << (t - 0xd0)
			v, err := d.be(size)
			shift := 64 - 8*size
			n.Kind, n.Int = Int, int64(v<<shift)>>shift
			return n, err
		case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
			return n, d.ext(n, int64(1)<<(t-0xd4), depth)
		case 0xd9, 0xda, 0xdb:
			l, err := d.length(1 << (t - 0xd9))
			if err != nil {
				return nil, err
			}
			return n, d.str(n, l)
		case 0xdc, 0xdd:
			l, err := d.length(2 << (t - 0xdc))
			if err != nil {
				return nil, err
			}
			return n, d.listBody(n, l, depth)
		case 0xde, 0xdf:
			l, err := d.length(2 << (t - 0xde))
			if err != nil {
				return nil, err
			}
			return n, d.mapBody(n, l, depth)
		default:
			return nil, d.errAt(start, "invalid type byte 0x%02x", t)
		}
	}
	return n, nil
}

func (d *decoder) str(n *Node, l int64) error {
	n.Kind = Str
	if l > maxStrLen {
		// Long strings are not keys or dtype names: keep their range only.
		n.DataOffset, n.DataLen = d.pos, l
		return d.skip(l)
	}
	start := d.pos
	var sb strings.Builder
	for l > 0 {
		k := int(min(l, maxBufferLen))
		b, err := d.take(k)
		if err != nil {
			return err
		}
		sb.Write(b)
		l -= int64(k)
	}
	n.Str = sb.String()
	n.DataOffset, n.DataLen = start, int64(len(n.Str))
	return nil
}

func (d *decoder) listBody(n *Node, count int64, depth int) error {
	n.Kind = List
	// Every element takes at least one byte.
	if count > d.size-d.pos {
		return d.errAt(n.Offset, "list of %d elements exceeds the %d bytes left", count, d.size-d.pos)
	}
	n.List = make([]*Node, 0, min(count, 1024))
	for i := int64(0); i < count; i++ {
		v, err := d.value(depth + 1)
		if err != nil {
			return err
		}
		n.List = append(n.List, v)
	}
	return nil
}

func (d *decoder) mapBody(n *Node, count int64, depth int) error {
	n.Kind = Map
	if count > (d.size-d.pos)/2 {
		return d.errAt(n.Offset, "map of %d entries exceeds the %d bytes left", count, d.size-d.pos)
	}
	n.Map = make([]Entry, 0, min(count, 1024))
	for i := int64(0); i < count; i++ {
		kOff := d.pos
		k, err := d.value(depth + 1)
		if err != nil {
			return err
		}
		var key string
		switch k.Kind {
		case Str:
			if k.Str == "" && k.DataLen > 0 {
				return d.errAt(kOff, "map key of %d bytes is too long", k.DataLen)
			}
			key = k.Str
		case Int:
			key = strconv.FormatInt(k.Int, 10)
		case Uint:
			key = strconv.FormatUint(k.Uint, 10)
		default:
			return d.errAt(kOff, "map key of kind %d is not a string or integer", k.Kind)
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return err
		}
		n.Map = append(n.Map, Entry{Key: key, Value: v})
	}
	return nil
}

// ext decodes an extension of payload length l.
func (d *decoder) ext(n *Node, l int64, depth int) error {
	typ, err := d.u8()
	if err != nil {
		return err
	}
	n.ExtType = int8(typ)
	n.DataOffset, n.DataLen = d.pos, l
	if l > d.size-d.pos {
		return d.errAt(d.pos, "extension of %d bytes exceeds the %d bytes left", l, d.size-d.pos)
	}
	if typ != extNDArray && typ != extScalar {
		n.Kind = Ext
		return d.skip(l)
	}
	// The payload is itself msgpack: (shape, dtype name, data bytes).
	end := d.pos + l
	sub := &decoder{r: d.r, size: end, file: d.file, pos: d.pos, buf: d.buf, bOff: d.bOff, nodes: d.nodes}
	tup, err := sub.value(depth + 1)
	if err != nil {
		return err
	}
	// The sub-decoder may have refilled the shared buffer: adopt its state.
	d.buf, d.bOff = sub.buf, sub.bOff
	if sub.pos != end {
		return d.errAt(sub.pos, "ndarray payload has %d trailing bytes", end-sub.pos)
	}
	if tup.Kind != List || len(tup.List) != 3 {
		return d.errAt(n.DataOffset, "ndarray payload is not a (shape, dtype, data) triple")
	}
	shape, dt, data := tup.List[0], tup.List[1], tup.List[2]
	if shape.Kind != List || len(shape.List) > maxRank {
		return d.errAt(shape.Offset, "ndarray shape is not a list of at most %d dimensions", maxRank)
	}
	n.Kind = NDArray
	n.Shape = make([]int64, len(shape.List))
	for i, s := range shape.List {
		if s.Kind != Int || s.Int < 0 {
			return d.errAt(s.Offset, "ndarray dimension %d is not a non-negative integer", i)
		}
		n.Shape[i] = s.Int
	}
	switch dt.Kind {
	case Str:
		n.DType = dt.Str
	case Bin: // raw=True packing writes the name as bytes
		if dt.DataLen > 64 {
			return d.errAt(dt.Offset, "dtype name of %d bytes", dt.DataLen)
		}
		b := make([]byte, dt.DataLen)
		if _, err := d.r.ReadAt(b, dt.DataOffset); err != nil {
			return d.errAt(dt.DataOffset, "read: %w", err)
		}
		n.DType = string(b)
	default:
		return d.errAt(dt.Offset, "ndarray dtype is not a name")
	}
	if data.Kind != Bin && data.Kind != Str {
		return d.errAt(data.Offset, "ndarray data is not a byte string")
	}
	n.DataOffset, n.DataLen = data.DataOffset, data.DataLen
	if es := ElemSize(n.DType); es > 0 {
		want, ok := elems(n.Shape)
		if !ok || want > math.MaxInt64/int64(es) || want*int64(es) != n.DataLen {
			return d.errAt(data.Offset, "ndarray %v of %s needs %d×%d bytes, the data has %d", n.Shape, n.DType, want, es, n.DataLen)
		}
	}
	d.pos = end
	return nil
}

func elems(shape []int64) (int64, bool) {
	n := int64(1)
	for _, s := range shape {
		if s != 0 && n > math.MaxInt64/s {
			return 0, false
		}
		n *= s
	}
	return n, true
}

// ElemSize is the byte size of a NumPy dtype name, or 0 if unknown.
func ElemSize(dtype string) int {
	switch dtype {
	case "bool", "int8", "uint8", "float8_e4m3fn", "float8_e5m2":
		return 1
	case "int16", "uint16", "float16", "bfloat16":
		return 2
	case "int32", "uint32", "float32":
		return 4
	case "int64", "uint64", "float64", "complex64":
		return 8
	case "complex128":
		return 16
	}
	return 0
}

// Segment is a byte range of the file.
type Segment struct{ Offset, Length int64 }

// Array is an ndarray leaf: its C-order bytes are the concatenation of
// Segments (one, unless flax chunked the array).
type Array struct {
	Path     []string
	Shape    []int64
	DType    string
	Segments []Segment
}

// Size is the array's byte length.
func (a *Array) Size() int64 {
	var n int64
	for _, s := range a.Segments {
		n += s.Length
	}
	return n
}

// Reader returns an io.ReaderAt over the array's bytes in file r.
func (a *Array) Reader(r io.ReaderAt) io.ReaderAt {
	if len(a.Segments) == 1 {
		return io.NewSectionReader(r, a.Segments[0].Offset, a.Segments[0].Length)
	}
	return &multiSection{r: r, segs: a.Segments, size: a.Size()}
}

type multiSection struct {
	r    io.ReaderAt
	segs []Segment
	size int64
}

// ReadAt reads across segment boundaries.
func (m *multiSection) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("msgpack: negative offset")
	}
	total := 0
	base := int64(0)
	for _, s := range m.segs {
		if len(p) == 0 {
			break
		}
		if off < base+s.Length {
			from := off - base
			k := min(int64(len(p)), s.Length-from)
			n, err := m.r.ReadAt(p[:k], s.Offset+from)
			total += n
			if int64(n) < k {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return total, err
			}
			p, off = p[k:], off+k
		}
		base += s.Length
	}
	if len(p) > 0 {
		return total, io.EOF
	}
	return total, nil
}

// Arrays walks the tree and returns every ndarray with its key path, in
// file order. Lists contribute their index as the path element. Flax's
// chunked arrays are reassembled; other leaves (numbers, strings) are
// skipped.
func Arrays(root *Node, file string) ([]*Array, error) {
	var out []*Array
	var walk func(n *Node, path []string) error
	walk = func(n *Node, path []string) error {
		switch n.Kind {
		case NDArray:
			out = append(out, &Array{Path: clone(path), Shape: n.Shape, DType: n.DType, Segments: []Segment{{n.DataOffset, n.DataLen}}})
		case Map:
			if c := n.Get("__msgpack_chunked_array__"); c != nil {
				a, err := unchunk(n, file)
				if err != nil {
					return err
				}
				a.Path = clone(path)
				out = append(out, a)
				return nil
			}
			for _, e := range n.Map {
				if err := walk(e.Value, append(path, e.Key)); err != nil {
					return err
				}
			}
		case List:
			for i, v := range n.List {
				if err := walk(v, append(path, strconv.Itoa(i))); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(root, nil)
}

func clone(p []string) []string { return append([]string(nil), p...) }

// unchunk reassembles {"__msgpack_chunked_array__": true, "shape": {"0":
// n, ...}, "chunks": {"0": ndarray, ...}}: the chunks are the flattened
// array's consecutive pieces.
func unchunk(n *Node, file string) (*Array, error) {
	bad := func(format string, args ...any) error {
		return &Error{File: file, Offset: n.Offset, Err: fmt.Errorf("chunked array: "+format, args...)}
	}
	shapeN, chunksN := n.Get("shape"), n.Get("chunks")
	if shapeN == nil || shapeN.Kind != Map || chunksN == nil || chunksN.Kind != Map {
		return nil, bad("missing shape or chunks")
	}
	dims, err := indexed(shapeN)
	if err != nil {
		return nil, bad("shape: %v", err)
	}
	a := &Array{}
	for _, d := range dims {
		if d.Kind != Int || d.Int < 0 {
			return nil, bad("shape entry is not a non-negative integer")
		}
		a.Shape = append(a.Shape, d.Int)
	}
	chunks, err := indexed(chunksN)
	if err != nil {
		return nil, bad("chunks: %v", err)
	}
	for i, c := range chunks {
		if c.Kind != NDArray || len(c.Shape) != 1 {
			return nil, bad("chunk %d is not a 1-D ndarray", i)
		}
		if i == 0 {
			a.DType = c.DType
		} else if c.DType != a.DType {
			return nil, bad("chunk %d has dtype %s, chunk 0 %s", i, c.DType, a.DType)
		}
		a.Segments = append(a.Segments, Segment{c.DataOffset, c.DataLen})
	}
	if len(chunks) == 0 {
		return nil, bad("no chunks")
	}
	want, ok := elems(a.Shape)
	es := ElemSize(a.DType)
	if !ok || (es > 0 && (want > math.MaxInt64/int64(es) || want*int64(es) != a.Size())) {
		return nil, bad("shape %v of %s does not match %d data bytes", a.Shape, a.DType, a.Size())
	}
	return a, nil
}

// indexed returns the values of a map keyed "0", "1", ... in index order.
func indexed(m *Node) ([]*Node, error) {
	out := make([]*Node, len(m.Map))
	seen := make([]bool, len(m.Map))
	for _, e := range m.Map {
		i, err := strconv.Atoi(e.Key)
		if err != nil || i < 0 || i >= len(out) || seen[i] {
			return nil, fmt.Errorf("key %q is not an index below %d", e.Key, len(out))
		}
		seen[i] = true
		out[i] = e.Value
	}
	return out, nil
}

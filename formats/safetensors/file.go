// Package safetensors reads and writes the safetensors tensor container and
// turns a Hugging Face Gemma checkpoint directory (config.json, one or more
// .safetensors shards, tokenizer.model) into an ir.Model.
//
// A safetensors file is an 8-byte little-endian header length n, n bytes of
// JSON mapping tensor names to {dtype, shape, data_offsets} (plus an
// optional "__metadata__" string map), then the data buffer the offsets
// index. Open validates the header as huggingface/safetensors does
// (tensor.rs: SafeTensors::read_metadata and Metadata::validate) and maps
// the file; each tensor's Source is a window into the mapping.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/gemmaconv/gemmaconv/internal/mmapfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// MaxHeaderSize is the largest JSON header accepted, the reference
// implementation's MAX_HEADER_SIZE (100 MB).
const MaxHeaderSize = 100_000_000

// useMmap is cleared by tests to exercise the pread fallback.
var useMmap = true

// dtypeBits lists every dtype the reference implementation knows, with its
// element size in bits. Only F32, F16 and BF16 can become IR tensors.
var dtypeBits = map[string]int64{
	"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
	"F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
	"F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
	"F64": 64, "I64": 64, "U64": 64,
}

// TensorInfo is one tensor entry of a safetensors header.
type TensorInfo struct {
	Name string
	// DType is the safetensors dtype name ("BF16", "F32", "I64", ...).
	DType string
	Shape []int64
	// Begin and End are the header's data_offsets: byte offsets relative to
	// the start of the data buffer, which begins at File.DataOffset().
	Begin, End int64
}

// Size is the tensor's size in bytes.
func (t TensorInfo) Size() int64 { return t.End - t.Begin }

// IRDType maps the safetensors dtype to an IR type. Only the float types
// Gemma weights use (F32, F16, BF16) map; others fail with an error that
// names the dtype and the tensor.
func (t TensorInfo) IRDType() (ir.DType, error) {
	switch t.DType {
	case "F32":
		return ir.F32, nil
	case "F16":
		return ir.F16, nil
	case "BF16":
		return ir.BF16, nil
	}
	return 0, fmt.Errorf("unsupported dtype %s for tensor %s (gemmaconv reads F32, F16 and BF16)", t.DType, t.Name)
}

// File is an open safetensors file: its parsed header and a read-only
// mapping of its contents (or, where mapping fails, the open file read with
// pread). Tensors handed out by Tensor stay valid until Close.
type File struct {
	// Path is the file's path as given to Open.
	Path string
	// Size is the file size in bytes.
	Size int64
	// HeaderLen is n, the length of the JSON header (padding included).
	HeaderLen int64
	// Metadata is the "__metadata__" map, nil when the header has none.
	Metadata map[string]string
	// Tensors lists the entries in data-offset order.
	Tensors []TensorInfo

	index  map[string]int
	mu     sync.RWMutex // guards closed against concurrent reads
	closed bool
	f      *os.File // nil for in-memory files
	data   []byte   // the whole file when mapped or in memory; nil with pread
	mapped bool     // data is an mmap to unmap on Close
}

// DataOffset is the file offset where the data buffer starts (8 + HeaderLen).
func (f *File) DataOffset() int64 { return 8 + f.HeaderLen }

// Info returns the entry for a tensor name.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// Names returns the tensor names in data-offset order.
func (f *File) Names() []string {
	names := make([]string, len(f.Tensors))
	for i, t := range f.Tensors {
		names[i] = t.Name
	}
	return names
}

// Open parses and validates a safetensors file and maps it into memory.
// Every error names the file and, where one is involved, the tensor and
// the byte offset.
func Open(path string) (*File, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := osf.Stat()
	if err != nil {
		osf.Close()
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		osf.Close()
		return nil, fmt.Errorf("safetensors: %s is not a regular file", path)
	}
	size := st.Size()
	f := &File{Path: path, Size: size, f: osf}
	if useMmap && size >= 8 {
		if data, err := mmapfile.Map(osf, size); err == nil {
			f.data, f.mapped = data, true
		}
	}
	var hdr []byte
	if f.data != nil {
		n, err := headerLen(path, f.data, size)
		if err != nil {
			f.Close()
			return nil, err
		}
		hdr = f.data[8 : 8+n]
	} else {
		// pread fallback: read the length, check it, then read only the header.
		var first [8]byte
		if _, err := osf.ReadAt(first[:min(8, int(max(size, 0)))], 0); err != nil && err != io.EOF {
			f.Close()
			return nil, fmt.Errorf("safetensors: %s: reading header length: %w", path, err)
		}
		n, err := headerLen(path, first[:min(8, int(max(size, 0)))], size)
		if err != nil {
			f.Close()
			return nil, err
		}
		hdr = make([]byte, n)
		if _, err := osf.ReadAt(hdr, 8); err != nil {
			f.Close()
			return nil, fmt.Errorf("safetensors: %s: reading %d-byte header at offset 8: %w", path, n, err)
		}
	}
	if err := f.parseHeader(hdr); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenBytes parses a safetensors file held in memory. The File reads from
// data, which the caller must not modify while the File is in use.
func OpenBytes(name string, data []byte) (*File, error) {
	f := &File{Path: name, Size: int64(len(data)), data: data}
	n, err := headerLen(name, data, f.Size)
	if err != nil {
		return nil, err
	}
	if err := f.parseHeader(data[8 : 8+n]); err != nil {
		return nil, err
	}
	return f, nil
}

// headerLen reads n from the first 8 bytes of a file of the given size and
// checks it against the cap and the file size before anything is sized by it.
func headerLen(path string, first []byte, size int64) (int64, error) {
	if size < 8 || len(first) < 8 {
		return 0, fmt.Errorf("safetensors: %s: file is %d bytes, too short for the 8-byte header length at offset 0", path, size)
	}
	n := binary.LittleEndian.Uint64(first[:8])
	if n > MaxHeaderSize {
		return 0, fmt.Errorf("safetensors: %s: header length %d at offset 0 exceeds the %d-byte limit", path, n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return 0, fmt.Errorf("safetensors: %s: header length %d at offset 0 runs past the end of the %d-byte file (truncated?)", path, n, size)
	}
	return int64(n), nil
}

// jsonEntry is one key of a JSON object with its raw value and the offset
// of the value within the parsed text.
type jsonEntry struct {
	key string
	raw json.RawMessage
	off int64
}

// posError is a JSON problem at a byte offset relative to the text parsed.
type posError struct {
	off int64
	msg string
}

func (e *posError) Error() string { return e.msg }

// at returns err's offset within the text it came from, shifted by base.
func at(base int64, err error) int64 {
	var pe *posError
	if errors.As(err, &pe) {
		return base + pe.off
	}
	return base
}

// syntaxErr converts a decoder error into a posError.
func syntaxErr(err error, fallback int64) error {
	off := fallback
	var se *json.SyntaxError
	var ue *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &ue):
		off = ue.Offset
	}
	return &posError{off, err.Error()}
}

// objectEntries splits a JSON object into its entries in order, rejecting
// duplicate keys (which Go's decoder would silently merge). Errors are
// posErrors relative to data.
func objectEntries(data []byte) ([]jsonEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxErr(err, 0)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &posError{0, "expected a JSON object"}
	}
	var out []jsonEntry
	seen := map[string]bool{}
	for dec.More() {
		keyOff := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxErr(err, keyOff)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, &posError{keyOff, "expected an object key"}
		}
		if seen[key] {
			return nil, &posError{keyOff, fmt.Sprintf("duplicate key %q", key)}
		}
		seen[key] = true
		off := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxErr(fmt.Errorf("value of %q: %w", key, err), off)
		}
		// InputOffset is before the ':' and whitespace; point at the value.
		for off < int64(len(data)) && data[off] != raw[0] {
			off++
		}
		out = append(out, jsonEntry{key, raw, off})
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != nil {
		return nil, syntaxErr(err, end)
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, &posError{int64(len(data) - len(rest)), "trailing data after the JSON object"}
	}
	return out, nil
}

// parseHeader decodes and validates the JSON header hdr (the n bytes after
// the length) and fills f's Metadata, Tensors and index.
func (f *File) parseHeader(hdr []byte) error {
	path := f.Path
	bad := func(off int64, format string, args ...any) error {
		return fmt.Errorf("safetensors: %s: JSON header at file byte %d: %s", path, 8+off, fmt.Sprintf(format, args...))
	}
	if !utf8.Valid(hdr) {
		return bad(0, "header is not valid UTF-8")
	}
	if len(hdr) == 0 || hdr[0] != '{' {
		return bad(0, "header does not start with '{' (not a safetensors file?)")
	}
	entries, err := objectEntries(hdr)
	if err != nil {
		return bad(at(0, err), "invalid JSON header: %v", err)
	}
	f.index = make(map[string]int, len(entries))
	f.Tensors = make([]TensorInfo, 0, len(entries))
	for _, e := range entries {
		if e.key == "__metadata__" {
			meta, err := parseMetadata(e.raw)
			if err != nil {
				return bad(at(e.off, err), "__metadata__: %v", err)
			}
			f.Metadata = meta
			continue
		}
		ti, err := parseTensorInfo(e.key, e.raw)
		if err != nil {
			return bad(at(e.off, err), "tensor %q: %v", e.key, err)
		}
		f.Tensors = append(f.Tensors, ti)
	}
	// The data buffer must be tiled exactly: sorted by offsets, each tensor
	// starts where the previous ended, and the last ends at end of file.
	sort.SliceStable(f.Tensors, func(i, j int) bool {
		a, b := f.Tensors[i], f.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	dataStart := 8 + int64(len(hdr))
	dataLen := f.Size - dataStart
	var pos int64
	for i, t := range f.Tensors {
		where := fmt.Sprintf("tensor %q (data_offsets [%d, %d], file bytes %d to %d)", t.Name, t.Begin, t.End, sat(dataStart, t.Begin), sat(dataStart, t.End))
		switch {
		case t.End < t.Begin:
			return fmt.Errorf("safetensors: %s: %s: end offset before start", path, where)
		case t.Begin > pos && i == 0:
			return fmt.Errorf("safetensors: %s: %s: gap of %d bytes at the start of the data buffer", path, where, t.Begin-pos)
		case t.Begin > pos:
			return fmt.Errorf("safetensors: %s: %s: gap of %d bytes after tensor %q", path, where, t.Begin-pos, f.Tensors[i-1].Name)
		case t.Begin < pos:
			return fmt.Errorf("safetensors: %s: %s: overlaps tensor %q, which ends at data offset %d", path, where, f.Tensors[i-1].Name, pos)
		}
		nbytes, err := byteSize(t.DType, t.Shape)
		if err != nil {
			return fmt.Errorf("safetensors: %s: %s: %v", path, where, err)
		}
		if nbytes != t.Size() {
			return fmt.Errorf("safetensors: %s: %s: dtype %s and shape %v need %d bytes, the offsets span %d", path, where, t.DType, t.Shape, nbytes, t.Size())
		}
		if t.End > dataLen {
			return fmt.Errorf("safetensors: %s: %s: runs past the end of the file (data buffer is %d bytes; truncated?)", path, where, dataLen)
		}
		pos = t.End
	}
	if pos != dataLen {
		return fmt.Errorf("safetensors: %s: tensors cover %d bytes of the %d-byte data buffer at file offset %d (%d stray bytes at file offset %d)", path, pos, dataLen, dataStart, dataLen-pos, dataStart+pos)
	}
	for i, t := range f.Tensors {
		f.index[t.Name] = i
	}
	f.HeaderLen = int64(len(hdr))
	return nil
}

// sat adds two non-negative offsets, saturating instead of overflowing
// (offsets come from the file and may be absurd).
func sat(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// parseMetadata decodes "__metadata__", which must map strings to strings.
func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	entries, err := objectEntries(raw)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(entries))
	for _, e := range entries {
		var s string
		if len(e.raw) == 0 || e.raw[0] != '"' {
			return nil, &posError{e.off, fmt.Sprintf("value of %q is %s, not a string", e.key, jsonKind(e.raw))}
		}
		if err := json.Unmarshal(e.raw, &s); err != nil {
			return nil, &posError{e.off, fmt.Sprintf("value of %q: %v", e.key, err)}
		}
		m[e.key] = s
	}
	return m, nil
}

// jsonKind names the JSON type of a raw value for error messages.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "empty"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// parseTensorInfo decodes one tensor entry: exactly the keys dtype, shape
// and data_offsets matter (others are ignored, as serde does).
func parseTensorInfo(name string, raw json.RawMessage) (TensorInfo, error) {
	ti := TensorInfo{Name: name}
	if len(raw) == 0 || raw[0] != '{' {
		return ti, &posError{0, fmt.Sprintf("entry is %s, not an object", jsonKind(raw))}
	}
	entries, err := objectEntries(raw)
	if err != nil {
		return ti, err
	}
	var haveDType, haveShape, haveOffsets bool
	for _, e := range entries {
		switch e.key {
		case "dtype":
			if err := json.Unmarshal(e.raw, &ti.DType); err != nil {
				return ti, &posError{e.off, fmt.Sprintf("dtype: %v", err)}
			}
			if _, ok := dtypeBits[ti.DType]; !ok {
				return ti, &posError{e.off, fmt.Sprintf("unknown dtype %q", ti.DType)}
			}
			haveDType = true
		case "shape":
			dims, err := parseUints(e.raw)
			if err != nil {
				return ti, &posError{e.off, fmt.Sprintf("shape: %v", err)}
			}
			ti.Shape = dims
			if ti.Shape == nil {
				ti.Shape = []int64{}
			}
			haveShape = true
		case "data_offsets":
			offs, err := parseUints(e.raw)
			if err != nil {
				return ti, &posError{e.off, fmt.Sprintf("data_offsets: %v", err)}
			}
			if len(offs) != 2 {
				return ti, &posError{e.off, fmt.Sprintf("data_offsets has %d entries, want 2", len(offs))}
			}
			ti.Begin, ti.End = offs[0], offs[1]
			haveOffsets = true
		}
	}
	switch {
	case !haveDType:
		return ti, fmt.Errorf("missing dtype")
	case !haveShape:
		return ti, fmt.Errorf("missing shape")
	case !haveOffsets:
		return ti, fmt.Errorf("missing data_offsets")
	}
	return ti, nil
}

// parseUints decodes a JSON array of non-negative integers that fit int64.
func parseUints(raw json.RawMessage) ([]int64, error) {
	var nums []json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&nums); err != nil {
		return nil, err
	}
	out := make([]int64, len(nums))
	for i, n := range nums {
		v, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || v > math.MaxInt64 {
			return nil, fmt.Errorf("entry %d (%s) is not an integer in [0, 2^63)", i, n)
		}
		out[i] = int64(v)
	}
	return out, nil
}

// byteSize is dtype-size × product(shape) in bytes with overflow checks.
func byteSize(dtype string, shape []int64) (int64, error) {
	bits, ok := dtypeBits[dtype]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	n := int64(1)
	for _, d := range shape {
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v: element count overflows int64", shape)
		}
		n *= d
	}
	if bits%8 == 0 {
		if n > math.MaxInt64/(bits/8) {
			return 0, fmt.Errorf("shape %v of %s: byte size overflows int64", shape, dtype)
		}
		return n * (bits / 8), nil
	}
	if n > math.MaxInt64/bits {
		return 0, fmt.Errorf("shape %v of %s: byte size overflows int64", shape, dtype)
	}
	if n*bits%8 != 0 {
		return 0, fmt.Errorf("shape %v of %s is not a whole number of bytes", shape, dtype)
	}
	return n * bits / 8, nil
}

// Tensor returns an IR tensor for a named entry whose Source is a window
// into the file. Only F32, F16 and BF16 entries convert.
func (f *File) Tensor(name string) (*ir.Tensor, error) {
	ti, ok := f.Info(name)
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: no tensor %q", f.Path, name)
	}
	dt, err := ti.IRDType()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %v (at file offset %d)", f.Path, err, f.DataOffset()+ti.Begin)
	}
	return &ir.Tensor{Name: name, DType: dt, Shape: append([]int64(nil), ti.Shape...), Source: f.Window(ti)}, nil
}

// Window returns a reader over one tensor's bytes. It implements
// io.ReaderAt and ir.Releaser.
func (f *File) Window(ti TensorInfo) *Window {
	return &Window{f: f, name: ti.Name, off: f.DataOffset() + ti.Begin, n: ti.Size()}
}

// Close unmaps and closes the file. Windows fail afterwards.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	if f.mapped {
		errs = append(errs, mmapfile.Unmap(f.data))
	}
	f.data = nil
	if f.f != nil {
		errs = append(errs, f.f.Close())
	}
	return errors.Join(errs...)
}

// Window is one tensor's bytes inside an open File.
type Window struct {
	f    *File
	name string
	off  int64 // absolute file offset
	n    int64
}

// Size is the window's length in bytes.
func (w *Window) Size() int64 { return w.n }

// ReadAt reads from the tensor's bytes; off is relative to the tensor.
func (w *Window) ReadAt(p []byte, off int64) (n int, err error) {
	if off < 0 {
		return 0, fmt.Errorf("safetensors: %s: tensor %s: negative offset %d", w.f.Path, w.name, off)
	}
	if off >= w.n {
		if len(p) == 0 && off == w.n {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > w.n-off {
		p = p[:w.n-off]
	}
	w.f.mu.RLock()
	defer w.f.mu.RUnlock()
	if w.f.closed {
		return 0, fmt.Errorf("safetensors: %s: tensor %s: read after Close", w.f.Path, w.name)
	}
	abs := w.off + off
	if w.f.data != nil {
		n, err = w.copyMapped(p, abs)
	} else {
		n, err = w.f.f.ReadAt(p, abs)
		if err == io.EOF && n == len(p) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("safetensors: %s: tensor %s: reading at file offset %d: %w", w.f.Path, w.name, abs+int64(n), err)
		}
	}
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

// copyMapped copies from the mapping, turning a fault (the file shrank
// under the mapping: SIGBUS) into an error instead of a crash.
func (w *Window) copyMapped(p []byte, abs int64) (n int, err error) {
	if w.f.mapped {
		old := debug.SetPanicOnFault(true)
		defer debug.SetPanicOnFault(old)
		defer func() {
			if r := recover(); r != nil {
				n, err = 0, fmt.Errorf("safetensors: %s: tensor %s: fault reading the mapping at file offset %d (file truncated while open?): %v", w.f.Path, w.name, abs, r)
			}
		}()
	}
	return copy(p, w.f.data[abs:abs+int64(len(p))]), nil
}

// Release tells the kernel the tensor's whole pages are no longer needed
// (madvise MADV_DONTNEED); they are read again from the file if touched.
func (w *Window) Release() { w.ReleaseRange(0, w.n) }

// ReleaseRange drops the pages wholly inside bytes [off, off+n) of the
// tensor (ir.RangeReleaser); pages shared with neighbouring bytes stay.
func (w *Window) ReleaseRange(off, n int64) {
	w.f.mu.RLock()
	defer w.f.mu.RUnlock()
	if w.f.closed || !w.f.mapped || off < 0 || n <= 0 || off >= w.n {
		return
	}
	mmapfile.ReleaseWithin(w.f.data, w.off+off, min(n, w.n-off))
}

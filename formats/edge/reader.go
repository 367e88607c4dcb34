// Package edge reads and writes gemmaconv's own model bundle (".gcvb",
// registered with ir.Open as "bundle"): a FlatBuffers header holding the
// whole ir.Model except tensor data — config, tokenizer, extra metadata and
// a tensor table with each tensor's xxhash64 — followed by the tensor data,
// each tensor aligned to 64 bytes so it can be memory-mapped and used in
// place. docs/bundle.md specifies the format.
package edge

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/gemmaconv/gemmaconv/internal/mmapfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// Magic is the four bytes every bundle starts with.
const Magic = "GCVB"

// Version is the format version this package writes and reads.
const Version = 1

// PreambleSize is the fixed part before the FlatBuffers header: magic,
// u32 version, u64 header length.
const PreambleSize = 16

// Alignment is the file-offset alignment of every tensor's data.
const Alignment = 64

// Limits the reader enforces on top of "nothing may point outside the
// file". They are far above what a real model needs.
const (
	// MaxHeaderSize caps the FlatBuffers header (Gemma 3's 262k-piece
	// vocabulary takes a few MB).
	MaxHeaderSize = 1 << 30
	// MaxTensorName caps a tensor name's bytes.
	MaxTensorName = 256
	// MaxKeyLength caps an Extra key's bytes.
	MaxKeyLength = 1<<16 - 1
	// MaxDims is the most dimensions a tensor may have.
	MaxDims = 4
)

// Error is a malformed-bundle error. It names the file, the item being read
// (a tensor, a header field) and the file offset of the bad bytes.
type Error struct {
	Path   string
	Item   string
	Offset int64
	Msg    string
	// Err, when set, is the sentinel the error wraps (ErrHashMismatch).
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("bundle: %s: %s at byte %d: %s", e.Path, e.Item, e.Offset, e.Msg)
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// File is an open bundle: its decoded header and, memory-mapped where the
// platform allows, its tensor data.
type File struct {
	Path string
	// Size is the file's size in bytes; HeaderSize the FlatBuffer's.
	Size       int64
	HeaderSize int64
	// DataOffset is where the first tensor starts.
	DataOffset int64
	Config     ir.Config
	Tokenizer  *ir.Tokenizer
	Extra      []ir.KV
	Tensors    []*TensorInfo

	src *mmapfile.File // the file's bytes: mapped, pread, or given to Parse
}

// TensorInfo is one row of the tensor table.
type TensorInfo struct {
	Name  string
	DType ir.DType
	// Shape is outermost first, as in the IR.
	Shape []int64
	// Offset is the absolute file offset of the data; Size its bytes.
	Offset, Size int64
	// Hash is the xxhash64 of the data as the writer computed it.
	Hash uint64
	// EntryOffset is the file offset of the tensor's header table.
	EntryOffset int64
}

// Open reads and validates a bundle's header and maps the file.
func Open(path string) (*File, error) {
	src, err := mmapfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	f := &File{Path: path, Size: src.Size(), src: src}
	if f.Size < PreambleSize {
		src.Close()
		return nil, &Error{Path: path, Item: "preamble", Msg: fmt.Sprintf("file has %d bytes, fewer than the %d-byte preamble", f.Size, PreambleSize)}
	}
	if err := f.parse(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Parse validates a bundle held in memory (tests, tools). Windows of the
// result read from data.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Path: name, Size: int64(len(data)), src: mmapfile.FromBytes(data)}
	if f.Size < PreambleSize {
		return nil, &Error{Path: name, Item: "preamble", Msg: fmt.Sprintf("file has %d bytes, fewer than the %d-byte preamble", f.Size, PreambleSize)}
	}
	if err := f.parse(); err != nil {
		return nil, err
	}
	return f, nil
}

// Close unmaps and closes the file. Windows must not be used afterwards.
func (f *File) Close() error { return f.src.Close() }

// readAt reads file bytes [off, off+len(p)) from the mapping or the file.
func (f *File) readAt(p []byte, off int64) error {
	n, err := f.src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (f *File) errf(item string, off int64, format string, args ...any) error {
	return &Error{Path: f.Path, Item: item, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func (f *File) parse() error {
	var pre [PreambleSize]byte
	if err := f.readAt(pre[:], 0); err != nil {
		return f.errf("preamble", 0, "reading: %v", err)
	}
	if string(pre[:4]) != Magic {
		return f.errf("preamble", 0, "bad magic %q (want %q): not a gemmaconv bundle", pre[:4], Magic)
	}
	if v := binary.LittleEndian.Uint32(pre[4:]); v != Version {
		return f.errf("preamble", 4, "unsupported bundle version %d (this build reads %d)", v, Version)
	}
	hl := binary.LittleEndian.Uint64(pre[8:])
	if hl > MaxHeaderSize {
		return f.errf("preamble", 8, "header length %d exceeds the limit of %d", hl, uint64(MaxHeaderSize))
	}
	if hl > uint64(f.Size-PreambleSize) {
		return f.errf("preamble", 8, "header length %d exceeds the %d bytes after the preamble (truncated?)", hl, f.Size-PreambleSize)
	}
	f.HeaderSize = int64(hl)
	f.DataOffset = alignUp(PreambleSize+f.HeaderSize, Alignment)
	var hdr []byte
	if data := f.src.Bytes(); data != nil {
		hdr = data[PreambleSize : PreambleSize+f.HeaderSize]
	} else {
		// Without a mapping the header is read whole; its size was
		// checked against the file's.
		hdr = make([]byte, f.HeaderSize)
		if err := f.readAt(hdr, PreambleSize); err != nil {
			return f.errf("header", PreambleSize, "reading: %v", err)
		}
	}
	v := &verifier{buf: hdr, path: f.Path, base: PreambleSize, budget: int64(len(hdr))}
	if err := v.verifyHeader(); err != nil {
		return err
	}
	return f.decode(v, getRootAsBundle(hdr, 0))
}

// decode turns the verified header into Go values and checks its meaning:
// ranges, types, and the tensor layout.
func (f *File) decode(v *verifier, root *fbBundle) error {
	if a := root.Alignment(); a != Alignment {
		return v.errf(uint64(root._tab.Pos), "header root", "alignment %d (version %d bundles use %d)", a, Version, Alignment)
	}
	var err error
	if f.Config, err = decodeConfig(v, root.Config(nil)); err != nil {
		return err
	}
	if tk := root.Tokenizer(nil); tk != nil {
		if f.Tokenizer, err = decodeTokenizer(v, tk); err != nil {
			return err
		}
	}
	var kv fbKV
	seenKey := map[string]bool{}
	for i := 0; i < root.ExtraLength(); i++ {
		root.Extra(&kv, i)
		item := fmt.Sprintf("extra[%d]", i)
		key := string(kv.Key())
		if key == "" || len(key) > MaxKeyLength {
			return v.errf(uint64(kv._tab.Pos), item, "key of %d bytes (1 to %d allowed)", len(key), MaxKeyLength)
		}
		item = fmt.Sprintf("extra key %q", key)
		if seenKey[key] {
			return v.errf(uint64(kv._tab.Pos), item, "duplicate key")
		}
		seenKey[key] = true
		val, err := decodeValue(v, kv.Value(nil), item)
		if err != nil {
			return err
		}
		f.Extra = append(f.Extra, ir.KV{Key: key, Value: val})
	}

	n := root.TensorsLength()
	f.Tensors = make([]*TensorInfo, 0, n) // n was checked against the header's size
	seen := make(map[string]int, n)
	var t fbTensor
	next := f.DataOffset
	for i := 0; i < n; i++ {
		root.Tensors(&t, i)
		at := PreambleSize + int64(t._tab.Pos)
		ti := &TensorInfo{Name: string(t.Name()), DType: ir.DType(t.DType()), EntryOffset: at}
		item := fmt.Sprintf("tensor %q", ti.Name)
		if ti.Name == "" || len(ti.Name) > MaxTensorName {
			return f.errf(fmt.Sprintf("tensor %d", i), at, "name of %d bytes (1 to %d allowed)", len(ti.Name), MaxTensorName)
		}
		if j, dup := seen[ti.Name]; dup {
			return f.errf(item, at, "duplicate tensor name (first is tensor %d)", j)
		}
		seen[ti.Name] = i
		if !ti.DType.Known() {
			return f.errf(item, at, "unknown ggml type %d", uint32(ti.DType))
		}
		nd := t.ShapeLength()
		if nd == 0 || nd > MaxDims {
			return f.errf(item, at, "%d dimensions (1 to %d supported)", nd, MaxDims)
		}
		ti.Shape = make([]int64, nd)
		elems := uint64(1)
		for j := range ti.Shape {
			d := t.Shape(j)
			if d <= 0 {
				return f.errf(item, at, "dimension %d is %d (must be positive)", j, d)
			}
			hi, lo := bits.Mul64(elems, uint64(d))
			if hi != 0 || lo > math.MaxInt64 {
				return f.errf(item, at, "element count of shape %v overflows", ti.Shape[:j+1])
			}
			ti.Shape[j], elems = d, lo
		}
		cols := ti.Shape[nd-1]
		if cols%int64(ti.DType.BlockSize()) != 0 {
			return f.errf(item, at, "row of %d elements is not a multiple of %s's block size %d", cols, ti.DType, ti.DType.BlockSize())
		}
		size, ok := byteSize(ti.DType, cols, int64(elems)/cols)
		if !ok {
			return f.errf(item, at, "size in bytes of %v %s overflows", ti.Shape, ti.DType)
		}
		d := t.Data(nil)
		off, sz := d.Offset(), d.Size()
		ti.Hash = d.Xxhash64()
		if sz != uint64(size) {
			return f.errf(item, at, "data size %d does not match shape %v of %s (%d bytes)", sz, ti.Shape, ti.DType, size)
		}
		if off > math.MaxInt64 || off%Alignment != 0 {
			return f.errf(item, at, "data offset %d is not a multiple of %d", off, Alignment)
		}
		ti.Offset, ti.Size = int64(off), size
		if ti.Offset > f.Size || ti.Size > f.Size-ti.Offset {
			return f.errf(item, at, "data [%d, +%d) runs past the end of the %d-byte file (truncated?)", ti.Offset, ti.Size, f.Size)
		}
		switch {
		case ti.Offset < next && i == 0:
			return f.errf(item, at, "data offset %d lies inside the header, which ends at %d", ti.Offset, next)
		case ti.Offset < next:
			prev := f.Tensors[i-1]
			return f.errf(item, at, "data offset %d overlaps tensor %q, which ends at %d", ti.Offset, prev.Name, prev.Offset+prev.Size)
		case ti.Offset > next:
			return f.errf(item, at, "data offset %d leaves a gap: expected %d (tensors are stored consecutively)", ti.Offset, next)
		}
		f.Tensors = append(f.Tensors, ti)
		next = alignUp(ti.Offset+ti.Size, Alignment)
	}
	var end int64
	if k := len(f.Tensors); k > 0 {
		end = f.Tensors[k-1].Offset + f.Tensors[k-1].Size
	} else {
		end = PreambleSize + f.HeaderSize
	}
	if f.Size != end {
		return f.errf("trailer", end, "%d bytes follow the last tensor, which ends at %d", f.Size-end, end)
	}
	return nil
}

// checkedInt converts a stored count to an int in [0, MaxInt32].
func checkedInt(v *verifier, t *fbConfig, name string, x int64) (int, error) {
	if x < 0 || x > math.MaxInt32 {
		return 0, v.errf(uint64(t._tab.Pos), "config", "%s = %d is out of range", name, x)
	}
	return int(x), nil
}

func decodeConfig(v *verifier, t *fbConfig) (ir.Config, error) {
	c := ir.Config{
		Family: ir.Family(t.Family()), RMSNormEps: t.RMSNormEps(), RopeBase: t.RopeBase(),
		RopeBaseLocal: t.RopeBaseLocal(), RopeScale: t.RopeScale(), AttnSoftcap: t.AttnSoftcap(),
		FinalSoftcap: t.FinalSoftcap(), QueryPreAttnScalar: t.QueryPreAttnScalar(), QKNorm: t.QKNorm(),
		PostNorms: t.PostNorms(), TiedEmbeddings: t.TiedEmbeddings(), NormOffset: t.NormOffset(),
	}
	for _, x := range []struct {
		name string
		dst  *int
		v    int64
	}{{"num_layers", &c.NumLayers, t.NumLayers()}, {"hidden", &c.Hidden, t.Hidden()}, {"ffn", &c.FFN, t.FFN()},
		{"num_heads", &c.NumHeads, t.NumHeads()}, {"num_kv_heads", &c.NumKVHeads, t.NumKVHeads()},
		{"head_dim", &c.HeadDim, t.HeadDim()}, {"vocab", &c.Vocab, t.Vocab()},
		{"context_length", &c.ContextLength, t.ContextLength()}, {"sliding_window", &c.SlidingWindow, t.SlidingWindow()}} {
		n, err := checkedInt(v, t, x.name, x.v)
		if err != nil {
			return c, err
		}
		*x.dst = n
	}
	n := t.SlidingLength()
	c.Sliding = make([]bool, n)
	for i := range c.Sliding {
		c.Sliding[i] = t.Sliding(i)
	}
	return c, nil
}

func decodeTokenizer(v *verifier, t *fbTokenizer) (*ir.Tokenizer, error) {
	n := t.PiecesLength()
	if t.ScoresLength() != n || t.TypesLength() != n {
		return nil, v.errf(uint64(t._tab.Pos), "tokenizer", "%d pieces, %d scores and %d types: the arrays must be parallel", n, t.ScoresLength(), t.TypesLength())
	}
	tk := &ir.Tokenizer{
		Model: string(t.Model()), Normalizer: string(t.Normalizer()),
		Pieces: make([]string, n), Scores: make([]float32, n), Types: make([]ir.TokenType, n),
		BOS: t.BOS(), EOS: t.EOS(), UNK: t.UNK(), PAD: t.PAD(), EOT: t.EOT(),
		AddBOS: t.AddBOS(), AddEOS: t.AddEOS(), AddSpacePrefix: t.AddSpacePrefix(),
		ByteFallback: t.ByteFallback(), SplitDigits: t.SplitDigits(), RemoveExtraWhitespaces: t.RemoveExtraWhitespaces(),
	}
	for i := 0; i < n; i++ {
		tk.Pieces[i] = string(t.Pieces(i)) // a copy: the mapping goes away on Close
		tk.Scores[i] = t.Scores(i)
		tk.Types[i] = ir.TokenType(t.Types(i))
	}
	for _, id := range []struct {
		name string
		v    int32
	}{{"bos", tk.BOS}, {"eos", tk.EOS}, {"unk", tk.UNK}, {"pad", tk.PAD}, {"eot", tk.EOT}} {
		if id.v < -1 || int64(id.v) >= int64(n) {
			return nil, v.errf(uint64(t._tab.Pos), "tokenizer", "%s id %d is outside the %d-piece vocabulary", id.name, id.v, n)
		}
	}
	return tk, nil
}

func alignUp(n, a int64) int64 {
	if r := n % a; r != 0 {
		return n + a - r
	}
	return n
}

// byteSize is the bytes of rows rows of cols elements of type t, false on
// overflow.
func byteSize(t ir.DType, cols, rows int64) (int64, bool) {
	hi, row := bits.Mul64(uint64(cols/int64(t.BlockSize())), uint64(t.TypeSize()))
	if hi != 0 || row > math.MaxInt64 {
		return 0, false
	}
	hi, lo := bits.Mul64(row, uint64(rows))
	if hi != 0 || lo > math.MaxInt64/2 {
		return 0, false
	}
	return int64(lo), true
}

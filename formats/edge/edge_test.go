package edge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// memSource serves a byte slice as a tensor source.
type memSource struct{ data []byte }

func (s *memSource) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func patterned(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// smallModel is a valid Gemma 3 model small enough that a test can cut its
// bundle at every byte: one layer, hidden 8, vocab 6.
func smallModel() *ir.Model {
	c := ir.Config{
		Family: ir.Gemma3, NumLayers: 1, Hidden: 8, FFN: 16, NumHeads: 2, NumKVHeads: 1, HeadDim: 4,
		Vocab: 6, ContextLength: 64, RMSNormEps: 1e-6, RopeBase: 1e6, RopeBaseLocal: 1e4, RopeScale: 8,
		SlidingWindow: 4, QueryPreAttnScalar: 4, QKNorm: true, PostNorms: true, TiedEmbeddings: true,
		NormOffset: 1, AttnSoftcap: 0, FinalSoftcap: 30,
	}
	c.Sliding = ir.DefaultSliding(c.Family, c.NumLayers)
	m := &ir.Model{Config: c, Tokenizer: &ir.Tokenizer{
		Model: "llama", Pieces: []string{"<pad>", "<eos>", "<bos>", "<unk>", "▁a", "b"},
		Scores: []float32{0, 0, 0, 0, -1.5, float32(math.Inf(-1))}, Types: []ir.TokenType{3, 3, 3, 2, 1, 4},
		BOS: 2, EOS: 1, UNK: 3, PAD: 0, EOT: -1, AddBOS: true, ByteFallback: true, SplitDigits: true,
		RemoveExtraWhitespaces: true, Normalizer: "identity",
	}}
	for i, s := range ir.ExpectedTensors(c) {
		t := &ir.Tensor{Name: s.Name, DType: ir.F32, Shape: s.Shape}
		if len(s.Shape) == 2 {
			t.DType = ir.BF16
		}
		t.Source = &memSource{patterned(int(t.Size()), byte(i))}
		m.Tensors = append(m.Tensors, t)
	}
	return m
}

// allValues exercises every Extra value type.
func allValues() []ir.KV {
	return []ir.KV{
		{Key: "u8", Value: uint8(200)}, {Key: "i8", Value: int8(-5)}, {Key: "u16", Value: uint16(60000)},
		{Key: "i16", Value: int16(-300)}, {Key: "u32", Value: uint32(1 << 31)}, {Key: "i32", Value: int32(-7)},
		{Key: "f32", Value: float32(-0.25)}, {Key: "bool", Value: true}, {Key: "str", Value: "héllo"},
		{Key: "empty", Value: ""}, {Key: "u64", Value: uint64(math.MaxUint64)}, {Key: "i64", Value: int64(math.MinInt64)},
		{Key: "f64", Value: math.Pi}, {Key: "au8", Value: []uint8{1, 2, 3}}, {Key: "ai8", Value: []int8{-1, 2}},
		{Key: "au16", Value: []uint16{1, 65535}}, {Key: "ai16", Value: []int16{-2, 3}}, {Key: "au32", Value: []uint32{7}},
		{Key: "ai32", Value: []int32{-1, 0, 1}}, {Key: "af32", Value: []float32{1.5, float32(math.NaN())}},
		{Key: "abool", Value: []bool{true, false, true}}, {Key: "astr", Value: []string{"a", "", "ccc"}},
		{Key: "au64", Value: []uint64{1 << 60}}, {Key: "ai64", Value: []int64{-1 << 60}}, {Key: "af64", Value: []float64{2.5}},
		{Key: "nested", Value: []any{[]int32{1, 2}, []string{"x"}, []any{[]bool{true}}}},
	}
}

func writeBundle(t testing.TB, m *ir.Model) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.gcvb")
	if err := Write(p, m, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, data
}

func readAll(t testing.TB, tn *ir.Tensor) []byte {
	t.Helper()
	b := make([]byte, tn.Size())
	if _, err := tn.Source.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v", tn.Name, err)
	}
	return b
}

// sameValue compares Extra values bit for bit (NaN included).
func sameValue(a, b any) bool {
	if x, ok := a.([]float32); ok {
		y, ok := b.([]float32)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestRoundTripSmall(t *testing.T) {
	m := smallModel()
	m.Extra = allValues()
	path, data := writeBundle(t, m)
	back, err := ir.Open(path, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Provenance.Format != FormatName {
		t.Errorf("format %q", back.Provenance.Format)
	}
	if !reflect.DeepEqual(back.Config, m.Config) {
		t.Errorf("config:\n got %+v\nwant %+v", back.Config, m.Config)
	}
	if !reflect.DeepEqual(back.Tokenizer, m.Tokenizer) {
		t.Errorf("tokenizer:\n got %+v\nwant %+v", back.Tokenizer, m.Tokenizer)
	}
	if len(back.Extra) != len(m.Extra) {
		t.Fatalf("%d extra entries, want %d", len(back.Extra), len(m.Extra))
	}
	for i, kv := range m.Extra {
		if back.Extra[i].Key != kv.Key || !sameValue(back.Extra[i].Value, kv.Value) {
			t.Errorf("extra %d: got %s=%#v, want %s=%#v", i, back.Extra[i].Key, back.Extra[i].Value, kv.Key, kv.Value)
		}
	}
	f, err := Parse("mem", data)
	if err != nil {
		t.Fatal(err)
	}
	for i, tn := range m.Tensors {
		bt := back.Tensors[i]
		if bt.Name != tn.Name || bt.DType != tn.DType || !reflect.DeepEqual(bt.Shape, tn.Shape) {
			t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, bt.Name, bt.DType, bt.Shape, tn.Name, tn.DType, tn.Shape)
		}
		if !bytes.Equal(readAll(t, bt), readAll(t, tn)) {
			t.Errorf("tensor %s: bytes differ", tn.Name)
		}
		if w := bt.Source.(*Window); len(w.Bytes()) != int(tn.Size()) {
			t.Errorf("tensor %s: mapped window of %d bytes", tn.Name, len(w.Bytes()))
		}
		if f.Tensors[i].Offset%Alignment != 0 {
			t.Errorf("tensor %s at offset %d", tn.Name, f.Tensors[i].Offset)
		}
	}
	if err := Verify(path); err != nil {
		t.Fatal(err)
	}
	// Deterministic output.
	_, again := writeBundle(t, m)
	if !bytes.Equal(data, again) {
		t.Error("two writes of the same model differ")
	}
}

// TestNormOffsetKept: NormOffset is data and is stored as is, even 0.
func TestNormOffsetKept(t *testing.T) {
	m := smallModel()
	m.Config.NormOffset = 0
	m.Tokenizer = nil
	path, _ := writeBundle(t, m)
	back, err := OpenModel(path)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Config.NormOffset != 0 || back.Tokenizer != nil {
		t.Errorf("norm offset %v, tokenizer %v", back.Config.NormOffset, back.Tokenizer)
	}
}

func TestWriteRejects(t *testing.T) {
	dir := t.TempDir()
	for name, mod := range map[string]func(m *ir.Model){
		"bad value":      func(m *ir.Model) { m.Extra = []ir.KV{{Key: "x", Value: struct{}{}}} },
		"dup key":        func(m *ir.Model) { m.Extra = []ir.KV{{Key: "x", Value: 1.0}, {Key: "x", Value: 2.0}} },
		"ragged tok":     func(m *ir.Model) { m.Tokenizer.Scores = m.Tokenizer.Scores[1:] },
		"special id":     func(m *ir.Model) { m.Tokenizer.BOS = 99 },
		"missing tensor": func(m *ir.Model) { m.Tensors = m.Tensors[1:] },
		"short source": func(m *ir.Model) {
			m.Tensors[0].Source = &memSource{make([]byte, 3)}
		},
	} {
		m := smallModel()
		mod(m)
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".gcvb")
		if err := Write(p, m, WriteOptions{}); err == nil {
			t.Errorf("%s: Write succeeded", name)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s: file left behind", name)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestTruncatedEveryByte(t *testing.T) {
	m := smallModel()
	m.Extra = allValues()
	_, data := writeBundle(t, m)
	for n := 0; n < len(data); n++ {
		if _, err := Parse("trunc", data[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(data))
		}
	}
	// A few through the file path too (mmap).
	dir := t.TempDir()
	for _, n := range []int{0, 15, 16, 100, len(data) / 2, len(data) - 1} {
		p := filepath.Join(dir, "t.gcvb")
		if err := os.WriteFile(p, data[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p); err == nil {
			t.Fatalf("file truncated to %d bytes opened", n)
		}
	}
}

// TestCorruptHeaderBytes flips every header byte in turn: each result is
// either rejected or decodes without a panic.
func TestCorruptHeaderBytes(t *testing.T) {
	_, data := writeBundle(t, smallModel())
	hl := int(binary.LittleEndian.Uint64(data[8:]))
	for i := PreambleSize; i < PreambleSize+hl; i++ {
		for _, x := range []byte{0xff, 0x80, 0x01} {
			c := bytes.Clone(data)
			c[i] ^= x
			if f, err := Parse("flip", c); err == nil {
				if _, err := f.Model(); err == nil {
					_ = f.verifyHashes()
				}
			}
		}
	}
}

// assemble builds a bundle from a header and total size, zero-filled.
func assemble(hdr []byte, size int64) []byte {
	out := make([]byte, max(size, int64(PreambleSize+len(hdr))))
	copy(out, Magic)
	binary.LittleEndian.PutUint32(out[4:], Version)
	binary.LittleEndian.PutUint64(out[8:], uint64(len(hdr)))
	copy(out[PreambleSize:], hdr)
	return out
}

// layoutOf returns the places Write would use for m.
func layoutOf(t *testing.T, m *ir.Model) ([]placed, int64) {
	t.Helper()
	pl := make([]placed, len(m.Tensors))
	for i, tn := range m.Tensors {
		pl[i].size = tn.Size()
	}
	hdr, err := buildHeader(m, pl)
	if err != nil {
		t.Fatal(err)
	}
	off := alignUp(PreambleSize+int64(len(hdr)), Alignment)
	for i := range pl {
		pl[i].offset = off
		off = alignUp(off+pl[i].size, Alignment)
	}
	last := pl[len(pl)-1]
	return pl, last.offset + last.size
}

func wantErr(t *testing.T, name string, data []byte, substr string) {
	t.Helper()
	f, err := Parse("hostile", data)
	if err == nil {
		_, err = f.Model()
	}
	if err == nil {
		t.Errorf("%s: no error", name)
		return
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("%s: error %q does not mention %q", name, err, substr)
	}
}

func TestHostile(t *testing.T) {
	m := smallModel()
	_, good := writeBundle(t, m)
	if _, err := Parse("good", good); err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte)) []byte { c := bytes.Clone(good); f(c); return c }

	wantErr(t, "bad magic", mut(func(b []byte) { copy(b, "GGUF") }), "bad magic")
	wantErr(t, "version", mut(func(b []byte) { b[4] = 2 }), "unsupported bundle version 2")
	wantErr(t, "huge header", mut(func(b []byte) { binary.LittleEndian.PutUint64(b[8:], 1<<62) }), "exceeds the limit")
	wantErr(t, "header past end", mut(func(b []byte) { binary.LittleEndian.PutUint64(b[8:], uint64(len(b))) }), "truncated")
	wantErr(t, "tiny header", mut(func(b []byte) { binary.LittleEndian.PutUint64(b[8:], 4) }), "cannot hold a FlatBuffer")
	wantErr(t, "root outside", mut(func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 1<<30) }), "header root")
	wantErr(t, "trailing bytes", append(bytes.Clone(good), 0), "follow the last tensor")

	// Headers built with a tampered layout.
	pl, size := layoutOf(t, m)
	build := func(name, substr string, size int64, f func(pl []placed, m *ir.Model)) {
		t.Helper()
		mm := m.Derive()
		mm.Tensors = nil
		for _, tn := range m.Tensors {
			c := *tn
			mm.Tensors = append(mm.Tensors, &c)
		}
		p := append([]placed(nil), pl...)
		f(p, mm)
		hdr, err := buildHeader(mm, p)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, name, assemble(hdr, size), substr)
	}
	if hdr, err := buildHeader(m, pl); err != nil {
		t.Fatal(err)
	} else if _, err := Parse("control", assemble(hdr, size)); err != nil {
		t.Fatalf("control: %v", err)
	}
	build("out of bounds", "runs past the end", size, func(p []placed, _ *ir.Model) {
		p[len(p)-1].offset += 1 << 40
	})
	build("offset past file", "runs past the end", size-1, func([]placed, *ir.Model) {})
	build("overlap", "overlaps tensor", size, func(p []placed, _ *ir.Model) { p[1].offset = p[0].offset })
	build("misaligned", "not a multiple of 64", size, func(p []placed, _ *ir.Model) { p[1].offset += 8 })
	build("gap", "leaves a gap", size, func(p []placed, _ *ir.Model) { p[1].offset += 64 })
	build("inside header", "inside the header", size, func(p []placed, _ *ir.Model) { p[0].offset = 0 })
	build("huge offset", "not a multiple of 64", size, func(p []placed, _ *ir.Model) { p[1].offset = -64 })
	build("wrong size", "does not match shape", size, func(p []placed, _ *ir.Model) { p[0].size-- })
	build("duplicate name", "duplicate tensor name", size, func(_ []placed, mm *ir.Model) {
		mm.Tensors[3].Name = mm.Tensors[2].Name // same length: the layout stays valid
	})
	build("unknown dtype", "unknown ggml type 4", size, func(_ []placed, mm *ir.Model) { mm.Tensors[0].DType = 4 })
	build("bad dims", "dimensions", size, func(_ []placed, mm *ir.Model) { mm.Tensors[0].Shape = nil })
	build("negative dim", "must be positive", size, func(_ []placed, mm *ir.Model) { mm.Tensors[0].Shape = []int64{-6, 8} })
	build("overflow", "overflows", size, func(_ []placed, mm *ir.Model) {
		mm.Tensors[0].Shape = []int64{1 << 40, 1 << 40}
	})
	build("block size", "block size", size, func(_ []placed, mm *ir.Model) { mm.Tensors[0].DType = ir.Q4_K })
	build("wrong shape", "the config implies", size, func(_ []placed, mm *ir.Model) {
		mm.Tensors[1].Shape = []int64{2, 4}
	})
	build("bad special", "outside the 6-piece vocabulary", size, func(_ []placed, mm *ir.Model) {
		tk := *mm.Tokenizer
		tk.EOS = 6
		mm.Tokenizer = &tk
	})
	build("ragged tokenizer", "parallel", size, func(_ []placed, mm *ir.Model) {
		tk := *mm.Tokenizer
		tk.Types = tk.Types[:2]
		mm.Tokenizer = &tk
	})
	build("bad config", "config", size, func(_ []placed, mm *ir.Model) { mm.Config.NumLayers = -1 })
	build("duplicate key", "duplicate key", size, func(_ []placed, mm *ir.Model) {
		mm.Extra = []ir.KV{{Key: "a", Value: "x"}, {Key: "a", Value: "y"}}
	})
}

// TestHostileValues builds Value tables that no writer produces.
func TestHostileValues(t *testing.T) {
	m := smallModel()
	m.Extra = []ir.KV{{Key: "v", Value: true}}
	_, good := writeBundle(t, m)
	// Find the bool's raw byte (1) by rebuilding with false and diffing.
	m.Extra[0].Value = false
	_, other := writeBundle(t, m)
	diff := -1
	for i := range good[:PreambleSize+int(binary.LittleEndian.Uint64(good[8:]))] {
		if good[i] != other[i] {
			if diff >= 0 {
				t.Fatal("more than one byte differs")
			}
			diff = i
		}
	}
	if diff < 0 {
		t.Fatal("no byte differs")
	}
	c := bytes.Clone(good)
	c[diff] = 2
	wantErr(t, "bool 2", c, "neither 0 nor 1")
	// Deep nesting is refused by the writer.
	var deep any = []int32{1}
	for range maxValueDepth + 2 {
		deep = []any{deep}
	}
	m.Extra[0].Value = deep
	if err := Write(filepath.Join(t.TempDir(), "d.gcvb"), m, WriteOptions{}); err == nil {
		t.Error("deeply nested arrays written")
	}
}

func TestVerifyCatchesMismatch(t *testing.T) {
	m := smallModel()
	path, data := writeBundle(t, m)
	f, err := Parse("mem", data)
	if err != nil {
		t.Fatal(err)
	}
	target := f.Tensors[3]
	data[target.Offset+target.Size/2] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Open is lazy and does not notice; Verify does.
	if back, err := OpenModel(path); err != nil {
		t.Fatal(err)
	} else {
		back.Close()
	}
	err = Verify(path)
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), target.Name) {
		t.Fatalf("Verify: %v (want a mismatch naming %s)", err, target.Name)
	}
	var be *Error
	if !errors.As(err, &be) || be.Offset != target.Offset {
		t.Errorf("error offset: %v", err)
	}
}

// TestSharedObjects: a header whose offsets point many times at one big
// string would decode into far more memory than the file holds; the
// verifier's budget refuses it.
func TestSharedObjects(t *testing.T) {
	m := smallModel()
	m.Tokenizer.Pieces[5] = strings.Repeat("x", 4096)
	_, data := writeBundle(t, m)
	if _, err := Parse("ok", data); err != nil {
		t.Fatal(err)
	}
	// Point every pieces entry at the long piece: find the pieces vector
	// by its length word followed by six offsets.
	hl := int(binary.LittleEndian.Uint64(data[8:]))
	hdr := data[PreambleSize : PreambleSize+hl]
	for p := 0; p+4*7 <= len(hdr); p += 4 {
		if binary.LittleEndian.Uint32(hdr[p:]) != 6 {
			continue
		}
		e5 := p + 4 + 4*5
		target := e5 + int(binary.LittleEndian.Uint32(hdr[e5:]))
		if target >= len(hdr) || binary.LittleEndian.Uint32(hdr[target:]) != 4096 {
			continue
		}
		for i := 0; i < 5; i++ {
			e := p + 4 + 4*i
			binary.LittleEndian.PutUint32(hdr[e:], uint32(target-e))
		}
		wantErr(t, "shared strings", data, "shared or overlap")
		return
	}
	t.Fatal("pieces vector not found")
}

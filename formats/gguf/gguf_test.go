package gguf

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

// memSource is an in-memory tensor source that records its reads.
type memSource struct {
	data  []byte
	reads [][2]int64
}

func (s *memSource) ReadAt(p []byte, off int64) (int, error) {
	s.reads = append(s.reads, [2]int64{off, int64(len(p))})
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
		b[i] = byte(i*31) ^ seed
	}
	return b
}

// allTypesKV has one entry of every value type, arrays of each, a nested
// array and empty arrays.
func allTypesKV() []ir.KV {
	return []ir.KV{
		{Key: "general.architecture", Value: "test"},
		{Key: "t.u8", Value: uint8(200)},
		{Key: "t.i8", Value: int8(-100)},
		{Key: "t.u16", Value: uint16(60000)},
		{Key: "t.i16", Value: int16(-30000)},
		{Key: "t.u32", Value: uint32(4000000000)},
		{Key: "t.i32", Value: int32(-2000000000)},
		{Key: "t.f32", Value: float32(3.25)},
		{Key: "t.bool", Value: true},
		{Key: "t.string", Value: "héllo ▁world"},
		{Key: "t.u64", Value: uint64(1 << 60)},
		{Key: "t.i64", Value: int64(-1 << 60)},
		{Key: "t.f64", Value: math.Pi},
		{Key: "t.empty_string", Value: ""},
		{Key: "a.u8", Value: []uint8{1, 2, 255}},
		{Key: "a.i8", Value: []int8{-1, 0, 1}},
		{Key: "a.u16", Value: []uint16{1, 65535}},
		{Key: "a.i16", Value: []int16{-32768, 32767}},
		{Key: "a.u32", Value: []uint32{7, 8, 9}},
		{Key: "a.i32", Value: []int32{-7, 8}},
		{Key: "a.f32", Value: []float32{0.5, -1e-6, float32(math.Inf(1))}},
		{Key: "a.bool", Value: []bool{true, false, true}},
		{Key: "a.string", Value: []string{"a", "", "<0x0A>", "▁the"}},
		{Key: "a.u64", Value: []uint64{math.MaxUint64}},
		{Key: "a.i64", Value: []int64{math.MinInt64}},
		{Key: "a.f64", Value: []float64{1e300, math.Copysign(0, -1)}},
		{Key: "a.empty", Value: []float32{}},
		{Key: "a.nested", Value: []any{[]int32{1, 2}, []string{"x"}, []any{[]bool{true}}, []uint8{}}},
		{Key: "a.nested_empty", Value: []any{}},
	}
}

// testTensors are tensors of several types with raw bytes of the right size.
func testTensors() []*ir.Tensor {
	mk := func(name string, t ir.DType, shape ...int64) *ir.Tensor {
		tt := &ir.Tensor{Name: name, DType: t, Shape: shape}
		tt.Source = &memSource{data: patterned(int(tt.Size()), byte(len(name)))}
		return tt
	}
	return []*ir.Tensor{
		mk("token_embd.weight", ir.F16, 16, 64),
		mk("blk.0.attn_norm.weight", ir.F32, 64),
		mk("blk.0.attn_q.weight", ir.Q8_0, 8, 64),
		mk("blk.0.ffn_down.weight", ir.Q4_K, 3, 256),
		mk("blk.0.ffn_up.weight", ir.BF16, 2, 3, 5),
		mk("odd", ir.F32, 1, 1, 1, 3),
	}
}

func writeTestFile(t *testing.T, opts WriteOptions) (string, []ir.KV, []*ir.Tensor) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.gguf")
	kvs, ts := allTypesKV(), testTensors()
	if err := WriteFile(path, kvs, ts, opts); err != nil {
		t.Fatal(err)
	}
	return path, kvs, ts
}

func TestRoundTrip(t *testing.T) {
	var progress []int64
	path, kvs, ts := writeTestFile(t, WriteOptions{Progress: func(done, total int64) { progress = append(progress, done, total) }})
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Version != 3 || f.Alignment != 32 || f.DataOffset%32 != 0 {
		t.Errorf("version %d alignment %d data offset %d", f.Version, f.Alignment, f.DataOffset)
	}
	if !reflect.DeepEqual(f.KV, kvs) {
		for i := range kvs {
			if i >= len(f.KV) || !reflect.DeepEqual(f.KV[i], kvs[i]) {
				t.Errorf("kv %d: got %#v, want %#v", i, f.KV[i], kvs[i])
			}
		}
		t.Fatalf("metadata differs")
	}
	if len(f.Tensors) != len(ts) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(ts))
	}
	var total int64
	for i, want := range ts {
		got := f.Tensors[i]
		if got.Name != want.Name || got.Type != want.DType || !reflect.DeepEqual(got.Shape(), want.Shape) || got.Size != want.Size() {
			t.Errorf("tensor %d: got %s %s %v %d, want %s %s %v %d", i, got.Name, got.Type, got.Shape(), got.Size, want.Name, want.DType, want.Shape, want.Size())
		}
		if got.Offset%32 != 0 {
			t.Errorf("tensor %s at unaligned offset %d", got.Name, got.Offset)
		}
		w := f.Window(got)
		buf := make([]byte, w.Size())
		if _, err := w.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want.Source.(*memSource).data) || !bytes.Equal(w.Bytes(), buf) {
			t.Errorf("tensor %s: data differs", got.Name)
		}
		w.Release()
		// Reading again after Release still works (pages come back).
		if _, err := w.ReadAt(buf[:1], 0); err != nil {
			t.Error(err)
		}
		if n, err := w.ReadAt(make([]byte, 4), w.Size()-2); n != 2 || err != io.EOF {
			t.Errorf("read past end: %d, %v", n, err)
		}
		total += want.Size()
	}
	if n := len(progress); n == 0 || progress[n-2] != total || progress[n-1] != total {
		t.Errorf("progress %v, want to end at %d/%d", progress, total, total)
	}
	// Padding is zeros and the file ends at the last tensor's aligned end.
	raw, _ := os.ReadFile(path)
	last := f.Tensors[len(f.Tensors)-1]
	end := f.DataOffset + alignUp(last.Offset+last.Size, 32)
	if int64(len(raw)) != end {
		t.Errorf("file has %d bytes, want %d", len(raw), end)
	}
	for _, b := range raw[f.DataOffset+last.Offset+last.Size:] {
		if b != 0 {
			t.Fatal("non-zero padding")
		}
	}
	// Parse of the same bytes agrees.
	g, err := Parse("mem", raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.KV, f.KV) || len(g.Tensors) != len(f.Tensors) {
		t.Error("Parse differs from Open")
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if _, err := f.Window(f.Tensors[0]).ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("read after Close succeeded")
	}
}

func TestWriteDeterministic(t *testing.T) {
	a, _, _ := writeTestFile(t, WriteOptions{})
	b, _, _ := writeTestFile(t, WriteOptions{})
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if !bytes.Equal(x, y) {
		t.Error("two writes of the same input differ")
	}
}

func TestWriteChunkedReads(t *testing.T) {
	// A tensor larger than one chunk is read front to back in row-aligned
	// chunks, each byte once.
	rows, cols := int64(3000), int64(512) // Q8_0 row = 544 bytes, 1.6 MB total
	big := &ir.Tensor{Name: "big", DType: ir.Q8_0, Shape: []int64{rows, cols}}
	src := &memSource{data: patterned(int(big.Size()), 7)}
	big.Source = src
	wide := &ir.Tensor{Name: "wide", DType: ir.F32, Shape: []int64{3, 1 << 20}} // 4 MiB rows
	wsrc := &memSource{data: patterned(int(wide.Size()), 9)}
	wide.Source = wsrc
	path := filepath.Join(t.TempDir(), "big.gguf")
	if err := WriteFile(path, nil, []*ir.Tensor{big, wide}, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*memSource{src, wsrc} {
		next := int64(0)
		for _, r := range s.reads {
			if r[0] != next {
				t.Fatalf("read at %d, want %d (sequential, once)", r[0], next)
			}
			next += r[1]
		}
		if next != int64(len(s.data)) {
			t.Fatalf("read %d bytes of %d", next, len(s.data))
		}
	}
	for _, r := range src.reads {
		if r[1]%big.RowBytes() != 0 || r[1] > chunkBytes {
			t.Errorf("chunk of %d bytes: not whole rows of %d or over %d", r[1], big.RowBytes(), chunkBytes)
		}
	}
	if len(src.reads) < 1 {
		t.Error("no reads")
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !bytes.Equal(f.Window(f.Tensor("big")).Bytes(), src.data) || !bytes.Equal(f.Window(f.Tensor("wide")).Bytes(), wsrc.data) {
		t.Error("data differs")
	}
}

type failingSource struct{ after int64 }

func (s failingSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.after {
		return 0, errors.New("source failed")
	}
	return len(p), nil
}

func TestWriteFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.gguf")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := &ir.Tensor{Name: "x", DType: ir.F32, Shape: []int64{1 << 21}, Source: failingSource{after: 4 << 20}}
	err := WriteFile(path, []ir.KV{{Key: "k", Value: uint32(1)}}, []*ir.Tensor{bad}, WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "source failed") || !strings.Contains(err.Error(), "tensor x") {
		t.Fatalf("err = %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the old file", len(ents))
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Error("old file was replaced")
	}
	// Invalid input fails before anything is created.
	for _, c := range []struct {
		kvs []ir.KV
		ts  []*ir.Tensor
	}{
		{kvs: []ir.KV{{Key: "a", Value: 1}}},
		{kvs: []ir.KV{{Key: "a", Value: uint8(1)}, {Key: "a", Value: uint8(2)}}},
		{kvs: []ir.KV{{Key: "", Value: uint8(1)}}},
		{kvs: []ir.KV{{Key: "general.alignment", Value: uint32(3)}}},
		{ts: []*ir.Tensor{{Name: "q", DType: ir.Q4_K, Shape: []int64{100}, Source: failingSource{}}}},
		{ts: []*ir.Tensor{{Name: strings.Repeat("n", 64), DType: ir.F32, Shape: []int64{1}, Source: failingSource{}}}},
		{ts: []*ir.Tensor{{Name: "s", DType: ir.F32, Shape: []int64{1, 1, 1, 1, 1}, Source: failingSource{}}}},
		{ts: []*ir.Tensor{{Name: "z", DType: ir.F32, Shape: []int64{0}, Source: failingSource{}}}},
	} {
		if err := WriteFile(filepath.Join(dir, "bad.gguf"), c.kvs, c.ts, WriteOptions{}); err == nil {
			t.Errorf("%v %v: no error", c.kvs, c.ts)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries after failed writes", len(ents))
	}
}

func TestAlignmentOption(t *testing.T) {
	path, _, ts := writeTestFile(t, WriteOptions{Alignment: 64})
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Alignment != 64 {
		t.Fatalf("alignment %d", f.Alignment)
	}
	if v, _ := f.Lookup("general.alignment"); v != uint32(64) {
		t.Errorf("general.alignment = %v", v)
	}
	for i, ti := range f.Tensors {
		if ti.Offset%64 != 0 || (f.DataOffset%64) != 0 {
			t.Errorf("tensor %s at %d", ti.Name, ti.Offset)
		}
		if !bytes.Equal(f.Window(ti).Bytes(), ts[i].Source.(*memSource).data) {
			t.Errorf("tensor %s differs", ti.Name)
		}
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "x.gguf"), []ir.KV{{Key: "general.alignment", Value: uint32(64)}}, nil, WriteOptions{Alignment: 128}); err == nil {
		t.Error("conflicting alignment accepted")
	}
}

// builder assembles GGUF bytes field by field for hostile-file tests.
type builder struct{ bytes.Buffer }

func (b *builder) u32(v uint32) *builder {
	binary.Write(b, binary.LittleEndian, v)
	return b
}
func (b *builder) u64(v uint64) *builder {
	binary.Write(b, binary.LittleEndian, v)
	return b
}
func (b *builder) str(s string) *builder {
	b.u64(uint64(len(s)))
	b.WriteString(s)
	return b
}
func (b *builder) header(nt, nkv uint64) *builder {
	b.WriteString("GGUF")
	return b.u32(3).u64(nt).u64(nkv)
}
func (b *builder) kvU32(k string, v uint32) *builder { return b.str(k).u32(uint32(TypeUint32)).u32(v) }
func (b *builder) tensor(name string, typ uint32, off uint64, dims ...uint64) *builder {
	b.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		b.u64(d)
	}
	return b.u32(typ).u64(off)
}
func (b *builder) padTo(n int) *builder {
	for b.Len() < n {
		b.WriteByte(0)
	}
	return b
}

func TestHostileFiles(t *testing.T) {
	data := func(b *builder, n int) []byte { // pad header to 32, then n data bytes
		b.padTo((b.Len() + 31) / 32 * 32)
		b.Write(make([]byte, n))
		return b.Bytes()
	}
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"bad magic", append([]byte("GGUX"), make([]byte, 20)...), "bad magic"},
		{"too short", new(builder).header(0, 0).Bytes()[:4:4], "fewer than"},
		{"unsupported version", func() []byte { b := new(builder); b.WriteString("GGUF"); return b.u32(4).u64(0).u64(0).Bytes() }(), "unsupported GGUF version 4"},
		{"old version", func() []byte { b := new(builder); b.WriteString("GGUF"); return b.u32(1).u64(0).u64(0).Bytes() }(), "version 1"},
		{"big endian", func() []byte { b := new(builder); b.WriteString("GGUF"); return b.u32(3 << 24).u64(0).u64(0).Bytes() }(), "byte-swapped"},
		{"huge n_tensors", new(builder).header(1<<62, 0).Bytes(), "tensor count"},
		{"huge n_kv", new(builder).header(0, 1<<40).Bytes(), "metadata count"},
		{"n_kv beyond file", new(builder).header(0, 3).kvU32("a", 1).Bytes(), "metadata count"},
		{"huge key length", new(builder).header(0, 1).u64(1 << 50).u32(0).u32(0).Bytes(), "key length"},
		{"huge string length", new(builder).header(0, 1).str("k").u32(uint32(TypeString)).u64(1 << 40).Bytes(), "string value length"},
		{"string past end", new(builder).header(0, 1).str("k").u32(uint32(TypeString)).u64(100).Bytes(), "string value length 100 exceeds"},
		{"huge array length", new(builder).header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint32)).u64(1 << 27).Bytes(), "array of"},
		{"array over cap", new(builder).header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint8)).u64(1 << 40).Bytes(), "array length"},
		{"string array beyond file", new(builder).header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(1000).u64(0).Bytes(), "array of 1000 STRING"},
		{"nested array bomb", func() []byte {
			b := new(builder).header(0, 1).str("k").u32(uint32(TypeArray))
			for i := 0; i < 20; i++ {
				b.u32(uint32(TypeArray)).u64(1)
			}
			b.u32(uint32(TypeUint8)).u64(0)
			return b.Bytes()
		}(), "nested more than"},
		{"wide nested arrays", new(builder).header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeArray)).u64(1 << 26).Bytes(), "array of"},
		{"unknown value type", new(builder).header(0, 1).str("k").u32(13).u32(0).Bytes(), "unknown value type 13"},
		{"unknown array type", new(builder).header(0, 1).str("k").u32(uint32(TypeArray)).u32(99).u64(0).Bytes(), "unknown array element type"},
		{"empty key", new(builder).header(0, 1).str("").u32(uint32(TypeUint32)).u32(0).Bytes(), "empty key"},
		{"duplicate key", new(builder).header(0, 2).kvU32("a.b", 1).kvU32("a.b", 2).Bytes(), `key "a.b" at byte`},
		{"alignment not power of two", new(builder).header(0, 1).kvU32("general.alignment", 48).Bytes(), "not a power of two"},
		{"alignment wrong type", new(builder).header(0, 1).str("general.alignment").u32(uint32(TypeUint64)).u64(32).Bytes(), "must be uint32"},
		{"too many dims", data(new(builder).header(1, 0).tensor("t", 0, 0, 1, 1, 1, 1, 1), 4), "5 dimensions"},
		{"zero dims", data(new(builder).header(1, 0).tensor("t", 0, 0), 4), "0 dimensions"},
		{"zero ne", data(new(builder).header(1, 0).tensor("t", 0, 0, 4, 0), 16), "must be positive"},
		{"negative ne", data(new(builder).header(1, 0).tensor("t", 0, 0, 1<<63), 16), "must be positive"},
		{"overflowing ne", data(new(builder).header(1, 0).tensor("t", 0, 0, 1<<32, 1<<32), 16), "overflows"},
		{"overflowing bytes", data(new(builder).header(1, 0).tensor("t", 0, 0, 1<<62, 1), 16), "overflows"},
		{"unknown type", data(new(builder).header(1, 0).tensor("t", 4, 0, 4), 16), "unknown ggml type 4"},
		{"type past range", data(new(builder).header(1, 0).tensor("t", 1000, 0, 4), 16), "unknown ggml type 1000"},
		{"row not whole blocks", data(new(builder).header(1, 0).tensor("t", uint32(ir.Q8_0), 0, 16), 64), "block size"},
		{"misaligned offset", data(new(builder).header(2, 0).tensor("a", 0, 0, 4).tensor("b", 0, 16, 4), 64), "not a multiple of the alignment"},
		{"overlapping offsets", data(new(builder).header(2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 4), 128), `overlaps tensor "a"`},
		{"gap between tensors", data(new(builder).header(2, 0).tensor("a", 0, 0, 4).tensor("b", 0, 64, 4), 128), "leaves a gap"},
		{"offset past EOF", data(new(builder).header(1, 0).tensor("a", 0, 0, 64), 16), "past the end of the file"},
		{"huge offset", data(new(builder).header(1, 0).tensor("a", 0, 1<<63, 4), 16), "out of range"},
		{"duplicate tensor name", data(new(builder).header(2, 0).tensor("a", 0, 0, 4).tensor("a", 0, 32, 4), 64), "duplicate tensor name"},
		{"empty tensor name", data(new(builder).header(1, 0).tensor("", 0, 0, 4), 16), "empty tensor name"},
		{"long tensor name", data(new(builder).header(1, 0).tensor(strings.Repeat("x", 64), 0, 0, 4), 16), "tensor name length 64"},
		{"data section past EOF", new(builder).header(1, 0).tensor("a", 0, 0, 1).Bytes(), "past the end"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".gguf")
			if err := os.WriteFile(path, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatalf("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, path) {
				t.Errorf("error %q does not mention %q and the path", msg, c.want)
			}
			var fe *Error
			if len(c.file) >= 24 && !errors.As(err, &fe) {
				t.Errorf("error %T is not *Error", err)
			}
			if _, err := Parse("mem", c.file); err == nil {
				t.Error("Parse accepted it")
			}
		})
	}
	// A bool must be 0 or 1.
	b := new(builder).header(0, 1).str("k").u32(uint32(TypeBool))
	b.WriteByte(2)
	if _, err := Parse("mem", b.Bytes()); err == nil || !strings.Contains(err.Error(), "neither 0 nor 1") {
		t.Errorf("bad bool: %v", err)
	}
	// Errors name the key and byte offset.
	_, err := Parse("mem", new(builder).header(0, 2).kvU32("a.b", 1).kvU32("a.b", 2).Bytes())
	var fe *Error
	if !errors.As(err, &fe) || fe.Item != `key "a.b"` || fe.Offset != 24+8+3+4+4 {
		t.Errorf("duplicate key error %#v", err)
	}
}

func TestTruncatedEverywhere(t *testing.T) {
	path, _, _ := writeTestFile(t, WriteOptions{})
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("full", raw)
	if err != nil {
		t.Fatal(err)
	}
	last := f.Tensors[len(f.Tensors)-1]
	dataEnd := int(f.DataOffset + last.Offset + last.Size)
	for n := 0; n < len(raw); n++ {
		_, err := Parse("cut", raw[:n])
		if n < dataEnd && err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(raw))
		}
		if n >= dataEnd && err != nil {
			t.Fatalf("truncated to %d (only padding lost): %v", n, err)
		}
	}
	// And through Open, at a spread of lengths (each is a file).
	dir := t.TempDir()
	for n := 0; n < dataEnd; n += 97 {
		p := filepath.Join(dir, "cut.gguf")
		os.WriteFile(p, raw[:n], 0o644)
		if f, err := Open(p); err == nil {
			f.Close()
			t.Fatalf("Open of %d bytes: no error", n)
		}
	}
}

func TestVersion2(t *testing.T) {
	path, kvs, _ := writeTestFile(t, WriteOptions{})
	raw, _ := os.ReadFile(path)
	binary.LittleEndian.PutUint32(raw[4:], 2)
	f, err := Parse("v2", raw)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 || !reflect.DeepEqual(f.KV, kvs) {
		t.Error("v2 file read differently")
	}
}

func TestReadLlamaCppImatrix(t *testing.T) {
	f, err := Open(filepath.Join("..", "..", "goldens", "gguf", "imatrix.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, _ := f.Lookup("general.type"); v != "imatrix" {
		t.Errorf("general.type = %v", v)
	}
	if v, _ := f.Lookup("imatrix.datasets"); !reflect.DeepEqual(v, []string{"brown-train-200k.txt"}) {
		t.Errorf("imatrix.datasets = %v", v)
	}
	if v, _ := f.Lookup("imatrix.chunk_count"); v != uint32(100) {
		t.Errorf("imatrix.chunk_count = %v", v)
	}
	if len(f.Tensors) != 84 {
		t.Fatalf("%d tensors, want 84", len(f.Tensors))
	}
	ti := f.Tensor("blk.0.attn_k.weight.in_sum2")
	if ti == nil || ti.Type != ir.F32 || !reflect.DeepEqual(ti.Dims, []int64{256}) {
		t.Fatalf("in_sum2 tensor: %+v", ti)
	}
	counts := f.Tensor("blk.0.attn_k.weight.counts")
	b := f.Window(counts).Bytes()
	if c := math.Float32frombits(binary.LittleEndian.Uint32(b)); c <= 0 {
		t.Errorf("counts = %v", c)
	}
	// Our writer reproduces the file byte for byte from what we read.
	var ts []*ir.Tensor
	for _, ti := range f.Tensors {
		ts = append(ts, &ir.Tensor{Name: ti.Name, DType: ti.Type, Shape: ti.Shape(), Source: f.Window(ti)})
	}
	out := filepath.Join(t.TempDir(), "imatrix.gguf")
	if err := WriteFile(out, f.KV, ts, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	x, _ := os.ReadFile(out)
	y, _ := os.ReadFile(f.Path)
	if !bytes.Equal(x, y) {
		t.Errorf("rewritten imatrix.gguf differs from llama.cpp's (%d vs %d bytes)", len(x), len(y))
	}
}

func TestDetect(t *testing.T) {
	path, _, _ := writeTestFile(t, WriteOptions{})
	if !Detect(path) {
		t.Error("Detect(gguf) = false")
	}
	if Detect(filepath.Dir(path)) {
		t.Error("Detect(dir) = true")
	}
	other := filepath.Join(t.TempDir(), "x.bin")
	os.WriteFile(other, []byte("GGU"), 0o644)
	if Detect(other) {
		t.Error("Detect(short file) = true")
	}
}

func TestSizeLabel(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{{6953984, "7.0M"}, {4_900_000, "4.9M"}, {2_506_172_416, "2.5B"}, {27_000_000_000, "27B"}, {999, "1.0K"}, {12_345, "12K"}, {300, "0.30K"}} {
		ts := []*ir.Tensor{{Name: "x", DType: ir.F32, Shape: []int64{c.n}}}
		if got := SizeLabel(ts); got != c.want {
			t.Errorf("SizeLabel(%d) = %s, want %s", c.n, got, c.want)
		}
	}
}

func TestGuessFileType(t *testing.T) {
	ts := func(types ...ir.DType) []*ir.Tensor {
		var out []*ir.Tensor
		for i, ty := range types {
			out = append(out, &ir.Tensor{Name: string(rune('a' + i)), DType: ty, Shape: []int64{256}})
		}
		return out
	}
	for _, c := range []struct {
		ts   []*ir.Tensor
		want uint32
	}{
		{ts(ir.F32, ir.F32), 0},
		{ts(ir.F32, ir.F16, ir.F16), 1},
		{ts(ir.BF16, ir.F32, ir.BF16), 32},
		{ts(ir.Q8_0, ir.F32, ir.Q8_0), 7},
		{ts(ir.Q4_K, ir.Q6_K, ir.Q4_K, ir.F32), 15},
		{ts(ir.Q6_K, ir.F32), 18}, // tie: first in name order to reach it
	} {
		if got := GuessFileType(c.ts); got != c.want {
			t.Errorf("GuessFileType = %d, want %d", got, c.want)
		}
	}
}

package safetensors

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// build assembles a safetensors file from a raw header string (padded to 8
// bytes as the reference writer does) and dataLen bytes of data 0,1,2,...
func build(header string, dataLen int) []byte {
	for len(header)%8 != 0 {
		header += " "
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	for i := 0; i < dataLen; i++ {
		b = append(b, byte(i))
	}
	return b
}

// writeTemp writes data to a file in a fresh temp dir and returns its path.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// validSmall is a well-formed two-tensor file: a F32 [2,2] and b BF16 [4].
const validSmallHeader = `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}`

func TestOpenValid(t *testing.T) {
	for _, mmap := range []bool{true, false} {
		t.Run(fmt.Sprintf("mmap=%v", mmap), func(t *testing.T) {
			useMmap = mmap
			defer func() { useMmap = true }()
			p := writeTemp(t, "ok.safetensors", build(validSmallHeader, 24))
			f, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.mapped != mmap {
				t.Fatalf("mapped = %v, want %v", f.mapped, mmap)
			}
			if got := f.Names(); strings.Join(got, ",") != "a,b" {
				t.Fatalf("names %v", got)
			}
			if f.Metadata["format"] != "pt" {
				t.Fatalf("metadata %v", f.Metadata)
			}
			b, err := f.Tensor("b")
			if err != nil {
				t.Fatal(err)
			}
			if b.DType != ir.BF16 || len(b.Shape) != 1 || b.Shape[0] != 4 {
				t.Fatalf("tensor b: %v %v", b.DType, b.Shape)
			}
			buf := make([]byte, 8)
			if _, err := b.Source.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, []byte{16, 17, 18, 19, 20, 21, 22, 23}) {
				t.Fatalf("tensor b bytes %v", buf)
			}
			// Reads past the end are short with io.EOF; a released window
			// reads the same bytes again.
			if n, err := b.Source.ReadAt(make([]byte, 4), 6); n != 2 || err != io.EOF {
				t.Fatalf("short read: n=%d err=%v", n, err)
			}
			b.Release()
			if _, err := b.Source.ReadAt(buf, 0); err != nil || buf[0] != 16 {
				t.Fatalf("after Release: %v %v", buf, err)
			}
			f.Close()
			if _, err := b.Source.ReadAt(buf, 0); err == nil || !strings.Contains(err.Error(), "after Close") {
				t.Fatalf("read after close: %v", err)
			}
		})
	}
}

// TestBadFiles checks that every kind of corruption gives an error naming
// the file and, where one is involved, the tensor and a byte offset.
func TestBadFiles(t *testing.T) {
	valid := build(validSmallHeader, 24)
	cases := []struct {
		name string
		data []byte
		want []string // substrings of the error
	}{
		{"empty", nil, []string{"too short", "offset 0"}},
		{"truncated length", []byte{8, 0, 0}, []string{"too short"}},
		{"truncated data", valid[:len(valid)-5], []string{`"b"`, "past the end", "truncated"}},
		{"extra data", append(append([]byte(nil), valid...), 1, 2, 3), []string{"stray bytes", "file offset"}},
		{"header size > file", append(binary.LittleEndian.AppendUint64(nil, 1000), "{}"...), []string{"header length 1000", "past the end"}},
		{"header > cap", append(binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1), "{}"...), []string{"exceeds the 100000000-byte limit"}},
		{"header length 2^64-1", append(binary.LittleEndian.AppendUint64(nil, math.MaxUint64), "{}"...), []string{"exceeds"}},
		{"not a json object", build(`["a"]`, 0), []string{"does not start with '{'", "file byte 8"}},
		{"leading space", build(` {}`, 0), []string{"does not start with '{'"}},
		{"bad json", build(`{"a":{"dtype":"F32",}}`, 0), []string{"invalid JSON", `"a"`}},
		{"invalid utf8", build("{\"\xff\":1}", 0), []string{"UTF-8"}},
		{"trailing garbage", build(`{} x`, 0), []string{"trailing data"}},
		{"duplicate tensor", build(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), []string{`duplicate key "a"`}},
		{"overlap", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), []string{`"b"`, `overlaps tensor "a"`, "file bytes"}},
		{"gap", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`, 20), []string{`"b"`, "gap of 4 bytes", "file bytes"}},
		{"gap at start", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), []string{`"a"`, "gap of 4 bytes at the start"}},
		{"end before start", build(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, 8), []string{`"a"`, "end offset before start"}},
		{"size mismatch", build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "need 12 bytes, the offsets span 8"}},
		{"shape overflow", build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "overflows"}},
		{"bytes overflow", build(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "overflows"}},
		{"huge offsets", build(`{"a":{"dtype":"U8","shape":[9223372036854775807],"data_offsets":[0,9223372036854775807]}}`, 8), []string{`"a"`, "past the end"}},
		{"negative dim", build(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, 0), []string{`"a"`, "shape"}},
		{"dim too big", build(`{"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,0]}}`, 0), []string{`"a"`, "shape"}},
		{"unknown dtype", build(`{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}`, 16), []string{`"a"`, `unknown dtype "F128"`, "file byte 22"}},
		{"missing dtype", build(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, 4), []string{`"a"`, "missing dtype"}},
		{"three offsets", build(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 1), []string{`"a"`, "3 entries"}},
		{"entry not object", build(`{"a":[1]}`, 0), []string{`"a"`, "not an object"}},
		{"metadata not strings", build(`{"__metadata__":{"format":1}}`, 0), []string{"__metadata__", "not a string"}},
		{"metadata not object", build(`{"__metadata__":"pt"}`, 0), []string{"__metadata__"}},
		{"sub-byte tensor", build(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, 2), []string{`"a"`, "whole number of bytes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, "bad.safetensors", c.data)
			f, err := Open(p)
			if err == nil {
				f.Close()
				t.Fatalf("Open succeeded on a bad file")
			}
			msg := err.Error()
			if !strings.Contains(msg, p) {
				t.Errorf("error does not name the file: %v", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			// The in-memory parser agrees.
			if _, err := OpenBytes("mem", c.data); err == nil {
				t.Errorf("OpenBytes accepted it")
			}
		})
	}
}

// TestRecognizedDTypes: every reference dtype parses; non-float ones are
// reported by Tensor with the dtype and tensor name.
func TestRecognizedDTypes(t *testing.T) {
	for dt, bits := range dtypeBits {
		n := 24 * 8 / bits // 24 bytes of data, a whole number of elements of every size
		data := build(fmt.Sprintf(`{"w":{"dtype":%q,"shape":[%d],"data_offsets":[0,24]}}`, dt, n), 24)
		f, err := OpenBytes(dt, data)
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		_, err = f.Tensor("w")
		switch dt {
		case "F32", "F16", "BF16":
			if err != nil {
				t.Errorf("%s: %v", dt, err)
			}
		default:
			if err == nil || !strings.Contains(err.Error(), "unsupported dtype "+dt+" for tensor w") || !strings.Contains(err.Error(), "file offset") {
				t.Errorf("%s: error %v", dt, err)
			}
		}
	}
}

// TestEdgeShapes: scalars, zero-size tensors and an empty file parse as
// in the reference implementation.
func TestEdgeShapes(t *testing.T) {
	f, err := OpenBytes("edge", build(`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}`, 4))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 2 || f.Tensors[0].Name != "s" || len(f.Tensors[0].Shape) != 0 {
		t.Fatalf("%+v", f.Tensors)
	}
	if _, err := OpenBytes("empty", build(`{}`, 0)); err != nil {
		t.Fatal(err)
	}
}

// TestSigbus: a file truncated while mapped yields an error, not a crash.
func TestSigbus(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("relies on Linux SIGBUS semantics")
	}
	page := os.Getpagesize()
	p := writeTemp(t, "shrink.safetensors", build(fmt.Sprintf(`{"a":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}`, 4*page, 4*page), 4*page))
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.mapped {
		t.Skip("mmap unavailable")
	}
	if err := os.Truncate(p, 16); err != nil {
		t.Fatal(err)
	}
	w, _ := f.Info("a")
	_, err = f.Window(w).ReadAt(make([]byte, 16), int64(3*page))
	if err == nil || !strings.Contains(err.Error(), "fault") {
		t.Fatalf("want a fault error, got %v", err)
	}
}

// TestWriteReference checks Write against byte vectors from the reference
// implementation's tests (safetensors/src/tensor.rs: test_serialization,
// test_empty, test_serialization_forced_alignement).
func TestWriteReference(t *testing.T) {
	f32s := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	data := f32s(0, 1, 2, 3, 4, 5)
	cases := []struct {
		name    string
		tensors []*ir.Tensor
		meta    map[string]string
		header  string
		data    []byte
	}{
		{"serialization", []*ir.Tensor{{Name: "attn.0", DType: ir.F32, Shape: []int64{1, 2, 3}, Source: bytes.NewReader(data)}}, nil,
			`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`, data},
		{"forced alignment", []*ir.Tensor{{Name: "attn0", DType: ir.F32, Shape: []int64{1, 1, 2, 3}, Source: bytes.NewReader(data)}}, nil,
			`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `, data},
		{"empty", nil, nil, `{}      `, nil},
		{"empty with metadata", nil, map[string]string{"framework": "pt"}, `{"__metadata__":{"framework":"pt"}}     `, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "out.safetensors")
			if err := Write(p, c.tensors, c.meta); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(p)
			want := binary.LittleEndian.AppendUint64(nil, uint64(len(c.header)))
			want = append(append(want, c.header...), c.data...)
			if !bytes.Equal(got, want) {
				t.Fatalf("got\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// countingSource is a reader of n pseudo-random bytes that records the
// largest read it served.
type countingSource struct {
	n, maxRead int64
}

func (s *countingSource) ReadAt(p []byte, off int64) (int, error) {
	s.maxRead = max(s.maxRead, int64(len(p)))
	for i := range p {
		p[i] = byte((off + int64(i)) * 7)
	}
	return len(p), nil
}

// TestWriteOrderAndStreaming: tensors are sorted by dtype alignment then
// name, big tensors are streamed in bounded chunks, and the file reads
// back byte for byte.
func TestWriteOrderAndStreaming(t *testing.T) {
	big := &countingSource{n: 3 << 21 * 4} // 6 Mi floats, 24 MiB: several chunks
	ts := []*ir.Tensor{
		{Name: "z.half", DType: ir.F16, Shape: []int64{3}, Source: bytes.NewReader([]byte{1, 2, 3, 4, 5, 6})},
		{Name: "b.bf", DType: ir.BF16, Shape: []int64{2}, Source: bytes.NewReader([]byte{7, 8, 9, 10})},
		{Name: "a.half", DType: ir.F16, Shape: []int64{1}, Source: bytes.NewReader([]byte{11, 12})},
		{Name: "y.big", DType: ir.F32, Shape: []int64{3 << 11, 1 << 10}, Source: big},
		{Name: "x\"q\n\u00e9", DType: ir.F32, Shape: []int64{1}, Source: bytes.NewReader([]byte{13, 14, 15, 16})},
	}
	p := filepath.Join(t.TempDir(), "order.safetensors")
	if err := Write(p, ts, map[string]string{"b": "2", "a": "1"}); err != nil {
		t.Fatal(err)
	}
	if big.maxRead > writeChunk {
		t.Errorf("largest source read %d bytes, want at most %d", big.maxRead, writeChunk)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := []string{"x\"q\n\u00e9", "y.big", "b.bf", "a.half", "z.half"}
	if got := f.Names(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("order %q, want %q", got, want)
	}
	if f.HeaderLen%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", f.HeaderLen)
	}
	raw, _ := os.ReadFile(p)
	if !bytes.HasPrefix(raw[8:], []byte(`{"__metadata__":{"a":"1","b":"2"},"x\"q\n`+"\u00e9"+`":`)) {
		t.Errorf("header starts %q", raw[8:80])
	}
	for _, src := range ts {
		st, err := f.Tensor(src.Name)
		if err != nil {
			t.Fatal(err)
		}
		a, b := make([]byte, src.Size()), make([]byte, st.Size())
		src.Source.ReadAt(a, 0)
		st.Source.ReadAt(b, 0)
		if !bytes.Equal(a, b) {
			t.Errorf("tensor %q differs after the round trip", src.Name)
		}
	}
	// No temp files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(entries))
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	src := bytes.NewReader(make([]byte, 64))
	cases := []struct {
		name string
		ts   []*ir.Tensor
		want string
	}{
		{"quantized", []*ir.Tensor{{Name: "q", DType: ir.Q4_0, Shape: []int64{32}, Source: src}}, "only F32, F16 and BF16"},
		{"duplicate", []*ir.Tensor{{Name: "a", DType: ir.F32, Shape: []int64{1}, Source: src}, {Name: "a", DType: ir.F32, Shape: []int64{1}, Source: src}}, "appears twice"},
		{"reserved name", []*ir.Tensor{{Name: "__metadata__", DType: ir.F32, Shape: []int64{1}, Source: src}}, "invalid tensor name"},
		{"short source", []*ir.Tensor{{Name: "s", DType: ir.F32, Shape: []int64{100}, Source: src}}, "tensor s: reading source at byte 64"},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name+".safetensors")
		err := Write(p, c.ts, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s: a failed write left %s", c.name, p)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed writes left %d files", len(entries))
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(build(validSmallHeader, 24))
	f.Add(build(`{}`, 0))
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12))
	f.Add(build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8))
	f.Add(build(`{"__metadata__":{"format":"pt"},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"I64","shape":[0],"data_offsets":[4,4]}}`, 4))
	f.Add(append(binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1), "{}"...))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := OpenBytes("fuzz", data)
		if err != nil {
			return
		}
		// A file that parses is internally consistent: every tensor lies
		// inside the input and reads fully.
		for _, ti := range sf.Tensors {
			if ti.Begin < 0 || ti.End < ti.Begin || sf.DataOffset()+ti.End > int64(len(data)) {
				t.Fatalf("tensor %q has offsets [%d,%d] outside a %d-byte file", ti.Name, ti.Begin, ti.End, len(data))
			}
			buf := make([]byte, ti.Size())
			if n, err := sf.Window(ti).ReadAt(buf, 0); n != len(buf) || (err != nil && err != io.EOF) {
				t.Fatalf("tensor %q: read %d of %d: %v", ti.Name, n, len(buf), err)
			}
			if tt, err := sf.Tensor(ti.Name); err == nil && tt.Size() != ti.Size() && len(ti.Shape) > 0 {
				t.Fatalf("tensor %q: IR size %d, file size %d", ti.Name, tt.Size(), ti.Size())
			}
		}
	})
}

package pytorch

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func tensorBytes(t *testing.T, x *TensorRef) []byte {
	t.Helper()
	r, err := x.Reader()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, x.NBytes())
	if n, err := r.ReadAt(b, 0); n != len(b) || (err != nil && err != io.EOF) {
		t.Fatalf("read %d of %d: %v", n, len(b), err)
	}
	return b
}

func openFlat(t *testing.T, path string) (*Checkpoint, map[string]*TensorRef, []string) {
	t.Helper()
	ck, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	ts, _, err := Flatten(ck.Root)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*TensorRef{}
	var order []string
	for _, x := range ts {
		m[x.Name] = x.TensorRef
		order = append(order, x.Name)
	}
	return ck, m, order
}

// TestViews reads torch-made views (storage offsets, transposes, column
// slices, stride 0, 0-dim, empty, every dtype) from zip, legacy and
// protocol-4 files and compares them with torch's own contiguous copies.
func TestViews(t *testing.T) {
	_, want, order := openFlat(t, filepath.Join(goldens, "views", "contiguous.pt"))
	if len(order) != 15 {
		t.Fatalf("reference has %d tensors", len(order))
	}
	for _, file := range []string{"zip.pt", "legacy.pt", "proto4.pt", "legacy_proto4.pt", "zip.pt/runs"} {
		t.Run(file, func(t *testing.T) {
			if f, ok := strings.CutSuffix(file, "/runs"); ok {
				// Gather run by run instead of from a loaded span.
				file = f
				old := maxGatherSpan
				maxGatherSpan = 0
				defer func() { maxGatherSpan = old }()
			}
			ck, got, gotOrder := openFlat(t, filepath.Join(goldens, "views", file))
			if strings.Join(gotOrder, ",") != strings.Join(order, ",") {
				t.Fatalf("order %v, want %v", gotOrder, order)
			}
			wantFormat := "zip"
			if strings.HasPrefix(file, "legacy") {
				wantFormat = "legacy"
			}
			if ck.Format != wantFormat {
				t.Fatalf("format %s", ck.Format)
			}
			for _, name := range order {
				g, w := got[name], want[name]
				if g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) {
					t.Fatalf("%s: %s %v, want %s %v", name, g.DType, g.Shape, w.DType, w.Shape)
				}
				if wantContig := name == "base" || name == "rows" || name == "elem" || name == "f64" || name == "i8" || name == "u8" || name == "bool" || name == "param" || name == "empty" || name == "bf16"; g.Contiguous() != wantContig {
					t.Errorf("%s: Contiguous() = %v", name, g.Contiguous())
				}
				gb, wb := tensorBytes(t, g), tensorBytes(t, w)
				if !bytes.Equal(gb, wb) {
					t.Fatalf("%s: bytes differ\n got %x\nwant %x", name, gb, wb)
				}
				// Unaligned and partial reads through the gatherer.
				r, _ := g.Reader()
				for off := 0; off < len(wb); off += 3 {
					for _, n := range []int{1, 5, 17} {
						buf := make([]byte, n)
						k, err := r.ReadAt(buf, int64(off))
						end := off + n
						if end > len(wb) {
							end = len(wb)
							if err != io.EOF {
								t.Fatalf("%s: short read at %d without EOF: %v", name, off, err)
							}
						} else if err != nil {
							t.Fatalf("%s: read at %d: %v", name, off, err)
						}
						if !bytes.Equal(buf[:k], wb[off:end]) {
							t.Fatalf("%s: read %d at %d: %x, want %x", name, n, off, buf[:k], wb[off:end])
						}
					}
				}
			}
			if p := got["param"]; p == nil || !p.RequiresGrad {
				t.Errorf("nn.Parameter lost requires_grad")
			}
		})
	}
}

// TestRowsView: Rows shares the storage and reads the right bytes, also
// on non-contiguous tensors.
func TestRowsView(t *testing.T) {
	_, got, _ := openFlat(t, filepath.Join(goldens, "views", "zip.pt"))
	_, want, _ := openFlat(t, filepath.Join(goldens, "views", "contiguous.pt"))
	for _, name := range []string{"base", "transposed", "cols", "every_other"} {
		g, w := got[name], want[name]
		for r0 := int64(0); r0 < g.Shape[0]; r0++ {
			for n := int64(0); r0+n <= g.Shape[0]; n++ {
				gv, err := g.Rows(r0, n)
				if err != nil {
					t.Fatal(err)
				}
				if gv.Storage != g.Storage {
					t.Fatal("Rows copied the storage")
				}
				wv, _ := w.Rows(r0, n)
				if !bytes.Equal(tensorBytes(t, gv), tensorBytes(t, wv)) {
					t.Fatalf("%s rows [%d,%d) differ", name, r0, r0+n)
				}
			}
		}
		if _, err := g.Rows(1, g.Shape[0]); err == nil {
			t.Fatalf("%s: rows past the end accepted", name)
		}
	}
}

type zipEntry struct {
	name   string
	data   []byte
	method uint16
	// raw, when set, is written as the entry's compressed bytes with the
	// declared sizes below (for lying headers).
	raw                     []byte
	declared, declaredCompr uint64
	declaredCRC             uint32
}

func writeZip(t testing.TB, path string, entries []zipEntry) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		if e.raw != nil {
			w, err := zw.CreateRaw(&zip.FileHeader{Name: e.name, Method: e.method, CompressedSize64: e.declaredCompr,
				UncompressedSize64: e.declared, CRC32: e.declaredCRC})
			if err != nil {
				t.Fatal(err)
			}
			w.Write(e.raw)
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func deflate(b []byte) []byte {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	fw.Write(b)
	fw.Close()
	return buf.Bytes()
}

// TestZipArchives covers archive-level checks with hand-made zips.
func TestZipArchives(t *testing.T) {
	dir := t.TempDir()
	pkl := tensorPickle("w", "FloatStorage", "0", 6, 0, []int32{2, 3}, []int32{3, 1})
	data := make([]byte, 24)
	for i := range data {
		data[i] = byte(i)
	}
	zeros := make([]byte, 1<<20)
	bomb := deflate(zeros)
	cases := []struct {
		name    string
		entries []zipEntry
		want    string // "" = opens and reads back data
	}{
		{"stored", []zipEntry{{name: "m/data.pkl", data: pkl}, {name: "m/data/0", data: data}, {name: "m/byteorder", data: []byte("little")}, {name: "m/version", data: []byte("3\n")}}, ""},
		{"deflated storage", []zipEntry{{name: "x/data.pkl", data: pkl, method: zip.Deflate}, {name: "x/data/0", data: data, method: zip.Deflate}}, ""},
		{"missing storage", []zipEntry{{name: "m/data.pkl", data: pkl}}, "zip entry m/data/0 is missing"},
		{"short storage", []zipEntry{{name: "m/data.pkl", data: pkl}, {name: "m/data/0", data: data[:20]}}, "holds 20 bytes, but 6 elements of float32 need 24"},
		{"big-endian", []zipEntry{{name: "m/data.pkl", data: pkl}, {name: "m/data/0", data: data}, {name: "m/byteorder", data: []byte("big")}}, "only little-endian"},
		{"no pickle", []zipEntry{{name: "m/data/0", data: data}}, "no <dir>/data.pkl"},
		{"torchscript", []zipEntry{{name: "m/code/x.py", data: data}, {name: "m/constants.pkl", data: data}}, "TorchScript"},
		{"two pickles", []zipEntry{{name: "a/data.pkl", data: pkl}, {name: "b/data.pkl", data: pkl}}, "two pickles"},
		{"hostile pickle", []zipEntry{{name: "m/data.pkl", data: []byte("cos\nsystem\n(S'id'\ntR.")}}, "m/data.pkl: pickle byte 0 (opcode GLOBAL): refused global os.system"},
		{"zip bomb ratio", []zipEntry{{name: "m/data.pkl", data: pkl}, {name: "m/data/0", raw: deflate(data), method: zip.Deflate, declared: 24, declaredCompr: 0}}, ""},
		{"zip bomb entry", []zipEntry{{name: "m/data.pkl", data: tensorPickle("w", "ByteStorage", "0", 1<<30, 0, []int32{1 << 30}, []int32{1})},
			{name: "m/data/0", raw: bomb, method: zip.Deflate, declared: 1 << 30, declaredCompr: uint64(len(bomb)), declaredCRC: 0}}, "refusing a zip bomb"},
		{"inflates past its declared size", []zipEntry{{name: "m/data.pkl", data: tensorPickle("w", "ByteStorage", "0", 1000, 0, []int32{1000}, []int32{1})},
			{name: "m/data/0", raw: bomb, method: zip.Deflate, declared: 1000, declaredCompr: uint64(len(bomb)), declaredCRC: crc32.ChecksumIEEE(zeros[:1000])}}, "does not end at its declared 1000 bytes"},
		{"unsupported method", []zipEntry{{name: "m/data.pkl", data: pkl}, {name: "m/data/0", raw: data, method: 12, declared: 24, declaredCompr: 24}}, "compression method 12"},
	}
	// The ratio case above declares 0 compressed bytes for 24: fix it up to a
	// legitimate small deflated entry.
	cases[9].entries[1].declaredCompr = uint64(len(deflate(data)))
	cases[9].entries[1].declaredCRC = crc32.ChecksumIEEE(data)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "c"+string(rune('a'+i))+".pt")
			writeZip(t, path, c.entries)
			ck, err := OpenCheckpoint(path)
			if err != nil {
				if c.want == "" || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error %v, want %q", err, c.want)
				}
				if !strings.Contains(err.Error(), path) {
					t.Fatalf("error %q does not name the file", err)
				}
				return
			}
			defer ck.Close()
			ts, _, err := Flatten(ck.Root)
			if err != nil {
				t.Fatal(err)
			}
			r, err := ts[0].Reader()
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, ts[0].NBytes())
			_, err = r.ReadAt(b, 0)
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("read error %v, want %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data) {
				t.Fatalf("read %x", b)
			}
			// Backward then forward reads of a compressed entry restart it.
			b2 := make([]byte, 8)
			if _, err := r.ReadAt(b2, 16); err != nil || !bytes.Equal(b2, data[16:]) {
				t.Fatalf("read at 16: %x %v", b2, err)
			}
			if _, err := r.ReadAt(b2, 4); err != nil || !bytes.Equal(b2, data[4:12]) {
				t.Fatalf("read at 4: %x %v", b2, err)
			}
		})
	}
}

// TestTruncated cuts real checkpoints at every few bytes: each cut must be
// an error naming the file (or, for cuts in ignored trailing bytes, a
// checkpoint whose tensors still read), never a panic.
func TestTruncated(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"zip.pt", "legacy.pt"} {
		full, err := os.ReadFile(filepath.Join(goldens, "views", name))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		failed := 0
		for cut := 0; cut < len(full); cut += 7 {
			os.WriteFile(path, full[:cut], 0o644)
			ck, err := OpenCheckpoint(path)
			if err != nil {
				failed++
				if strings.Contains(err.Error(), "internal error") || !strings.Contains(err.Error(), path) {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				continue
			}
			ck.Close()
		}
		if failed < len(full)/7-1 {
			t.Errorf("%s: only %d of %d truncations were rejected", name, failed, len(full)/7+1)
		}
	}
}

// TestLegacyTamper: a legacy file whose storage header disagrees with the
// pickle, or whose storage runs past the end, is rejected.
func TestLegacyTamper(t *testing.T) {
	full, err := os.ReadFile(filepath.Join(goldens, "views", "legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := OpenCheckpoint(filepath.Join(goldens, "views", "legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	// Find the first storage header: the data of the first storage minus 8.
	var first int64 = -1
	for _, s := range ck.Storages {
		if sec, ok := s.src.(*io.SectionReader); ok {
			_, off, _ := sec.Outer()
			if first < 0 || off < first {
				first = off
			}
		}
	}
	ck.Close()
	if first < 8 {
		t.Fatal("no storage found")
	}
	bad := append([]byte(nil), full...)
	bad[first-8] ^= 0x40
	path := filepath.Join(t.TempDir(), "bad.pt")
	os.WriteFile(path, bad, 0o644)
	if _, err := OpenCheckpoint(path); err == nil || !strings.Contains(err.Error(), "elements, the pickle says") {
		t.Fatalf("tampered header: %v", err)
	}
	// Wrong magic.
	bad = append([]byte(nil), full...)
	bad[5] ^= 1
	os.WriteFile(path, bad, 0o644)
	if _, err := OpenCheckpoint(path); err == nil || !strings.Contains(err.Error(), "magic number") {
		t.Fatalf("bad magic: %v", err)
	}
}

func TestNotACheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.bin")
	os.WriteFile(path, []byte("GGUF\x03\x00\x00\x00"), 0o644)
	if _, err := OpenCheckpoint(path); err == nil || !strings.Contains(err.Error(), "not a torch.save file") {
		t.Fatalf("%v", err)
	}
	if Detect(path) {
		t.Fatal("Detect claimed a GGUF header")
	}
}

package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

func sampleImatrix() *Imatrix {
	return &Imatrix{
		Entries: map[string]ImatrixEntry{
			"blk.0.attn_q.weight":   {Sums: []float32{4, 8, 0.5, 2}, Counts: []int64{4}},
			"blk.0.ffn_down.weight": {Sums: []float32{1, 2, 3, 4, 5, 6}, Counts: []int64{2, 0}},
		},
		Datasets:   []string{"train.txt"},
		ChunkCount: 3,
		ChunkSize:  128,
	}
}

func TestImatrixRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "im.gguf")
	want := sampleImatrix()
	if err := WriteImatrix(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadImatrix(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	w := got.Weights()
	if !reflect.DeepEqual(w["blk.0.attn_q.weight"], []float32{1, 2, 0.125, 0.5}) {
		t.Errorf("weights %v", w["blk.0.attn_q.weight"])
	}
	// A matrix with a zero count gets weight 1 (llama-quantize's rule).
	if !reflect.DeepEqual(w["blk.0.ffn_down.weight"], []float32{0.5, 1, 1.5, 1, 1, 1}) {
		t.Errorf("weights %v", w["blk.0.ffn_down.weight"])
	}
}

// legacyImatrix encodes entries in the .dat format.
func legacyImatrix(entries []struct {
	name  string
	ncall int32
	vals  []float32
}, trailer bool, chunks int32, dataset string) []byte {
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	w(int32(len(entries)))
	for _, e := range entries {
		w(int32(len(e.name)))
		b.WriteString(e.name)
		w(e.ncall)
		w(int32(len(e.vals)))
		w(e.vals)
	}
	if trailer {
		w(chunks)
		w(int32(len(dataset)))
		b.WriteString(dataset)
	}
	return b.Bytes()
}

func TestImatrixLegacy(t *testing.T) {
	data := legacyImatrix([]struct {
		name  string
		ncall int32
		vals  []float32
	}{{"blk.0.attn_k.weight", 4, []float32{8, 4, 2}}, {"blk.1.attn_k.weight", 0, []float32{3}}}, true, 7, "corpus.txt")
	im, err := ParseImatrix("legacy.dat", data)
	if err != nil {
		t.Fatal(err)
	}
	if !im.Legacy || im.ChunkCount != 7 || !reflect.DeepEqual(im.Datasets, []string{"corpus.txt"}) || len(im.Entries) != 2 {
		t.Fatalf("parsed %+v", im)
	}
	w := im.Weights()
	if !reflect.DeepEqual(w["blk.0.attn_k.weight"], []float32{2, 1, 0.5}) || !reflect.DeepEqual(w["blk.1.attn_k.weight"], []float32{3}) {
		t.Errorf("weights %v", w)
	}
	// Without the optional trailer.
	data = legacyImatrix([]struct {
		name  string
		ncall int32
		vals  []float32
	}{{"a.weight", 1, []float32{1}}}, false, 0, "")
	if im, err := ParseImatrix("legacy.dat", data); err != nil || im.ChunkCount != 0 || im.Datasets != nil {
		t.Fatalf("no trailer: %+v, %v", im, err)
	}
}

func TestImatrixBad(t *testing.T) {
	good := legacyImatrix([]struct {
		name  string
		ncall int32
		vals  []float32
	}{{"blk.0.attn_k.weight", 4, []float32{8, 4, 2}}}, true, 7, "corpus.txt")
	for i := 0; i < 4+4+19+4+4+12; i++ {
		if _, err := ParseImatrix("cut.dat", good[:i]); err == nil {
			t.Errorf("legacy file cut to %d bytes parsed", i)
		}
	}
	huge := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(huge[4+4+19+4:], 1<<30) // nval
	if _, err := ParseImatrix("huge.dat", huge); err == nil || !strings.Contains(err.Error(), "huge.dat") {
		t.Errorf("huge value count: %v", err)
	}

	dir := t.TempDir()
	// Sums without counts.
	im := sampleImatrix()
	path := filepath.Join(dir, "x.gguf")
	if err := WriteImatrix(path, im); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*ir.Tensor
	for _, ti := range f.Tensors {
		if strings.HasSuffix(ti.Name, ".counts") && strings.HasPrefix(ti.Name, "blk.0.attn_q") {
			continue
		}
		raw := make([]byte, ti.Size)
		f.Window(ti).ReadAt(raw, 0)
		ts = append(ts, &ir.Tensor{Name: ti.Name, DType: ti.Type, Shape: ti.Shape(), Source: bytes.NewReader(raw)})
	}
	kvs := f.KV
	f.Close()
	p2 := filepath.Join(dir, "y.gguf")
	if err := WriteFile(p2, kvs, ts, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadImatrix(p2); err == nil || !strings.Contains(err.Error(), "mismatched sums and counts for blk.0.attn_q.weight") {
		t.Errorf("missing counts: %v", err)
	}
	// Missing metadata.
	if err := WriteFile(p2, kvs[:1], ts, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadImatrix(p2); err == nil || !strings.Contains(err.Error(), "missing imatrix metadata") {
		t.Errorf("missing metadata: %v", err)
	}
	// A negative count.
	bad := sampleImatrix()
	bad.Entries["blk.0.attn_q.weight"] = ImatrixEntry{Sums: []float32{1}, Counts: []int64{-3}}
	if err := WriteImatrix(p2, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadImatrix(p2); err == nil || !strings.Contains(err.Error(), "count -3") {
		t.Errorf("negative count: %v", err)
	}
	if _, err := ReadImatrix(filepath.Join(dir, "absent.gguf")); err == nil {
		t.Error("absent file read")
	}
}

// TestImatrixFixture reads llama-imatrix's own file for the fixture
// models and checks that writing it back reproduces it byte for byte.
func TestImatrixFixture(t *testing.T) {
	root := os.Getenv("GEMMACONV_FIXTURES")
	if root == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the llama-imatrix reference files live in the shared fixtures")
	}
	for _, m := range []struct {
		name   string
		layers int
	}{{"gemma1-tiny", 4}, {"gemma2-tiny", 4}, {"gemma3-tiny", 6}} {
		path := filepath.Join(root, m.name, "llamacpp", "imatrix.gguf")
		im, err := ReadImatrix(path)
		if err != nil {
			t.Fatal(err)
		}
		// Seven matrices per layer; llama-imatrix collects blk.* only.
		if len(im.Entries) != 7*m.layers || im.ChunkCount != 100 || im.ChunkSize != 128 || len(im.Datasets) != 1 {
			t.Errorf("%s: %d entries, %d chunks of %d, datasets %v", m.name, len(im.Entries), im.ChunkCount, im.ChunkSize, im.Datasets)
		}
		for name, w := range im.Weights() {
			want := 256
			if strings.Contains(name, "ffn_down") {
				want = 1024
			}
			if len(w) != want {
				t.Errorf("%s: %s has %d weights, want %d", m.name, name, len(w), want)
			}
			for _, v := range w {
				if !(v >= 0) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s: %s: weight %v", m.name, name, v)
				}
			}
		}
		out := filepath.Join(t.TempDir(), "im.gguf")
		if err := WriteImatrix(out, im); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(path)
		b, _ := os.ReadFile(out)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: rewritten imatrix differs from llama-imatrix's (%d vs %d bytes)", m.name, len(b), len(a))
		}
	}
}

func FuzzParseImatrix(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.gguf")
	if err := WriteImatrix(path, sampleImatrix()); err != nil {
		f.Fatal(err)
	}
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add(legacyImatrix([]struct {
		name  string
		ncall int32
		vals  []float32
	}{{"blk.0.attn_k.weight", 4, []float32{8, 4, 2}}}, true, 7, "corpus.txt"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := ParseImatrix("fuzz", data)
		if err != nil {
			return
		}
		w := im.Weights()
		for name, e := range im.Entries {
			if len(w[name]) != len(e.Sums) {
				t.Fatalf("%s: %d weights for %d sums", name, len(w[name]), len(e.Sums))
			}
		}
	})
}

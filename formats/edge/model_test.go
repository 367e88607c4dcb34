package edge_test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/edge"
	"github.com/gemmaconv/gemmaconv/formats/gguf"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/runtime"
)

// The bundled example model (goldens/gemma3-tiny, copied from the shared
// fixtures) is always in the repository, so these tests need no env var.
var (
	tinyHF      = filepath.Join("..", "..", "goldens", "gemma3-tiny", "hf")
	tinyGoldens = filepath.Join("..", "..", "goldens", "gemma3-tiny", "goldens")
)

func open(t *testing.T, path string) *ir.Model {
	t.Helper()
	m, err := ir.Open(path, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func tensorBytes(t *testing.T, tn *ir.Tensor) []byte {
	t.Helper()
	b := make([]byte, tn.Size())
	if _, err := tn.Source.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v", tn.Name, err)
	}
	return b
}

func sameTensors(t *testing.T, got, want *ir.Model) {
	t.Helper()
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		g := got.Tensors[i]
		if g.Name != w.Name || g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) {
			t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, g.Name, g.DType, g.Shape, w.Name, w.DType, w.Shape)
			continue
		}
		if !bytes.Equal(tensorBytes(t, g), tensorBytes(t, w)) {
			t.Errorf("tensor %s: bytes differ", w.Name)
		}
	}
}

// TestHFRoundTrip: Hugging Face checkpoint -> bundle -> ir.Open gives the
// same config, tokenizer (every field) and tensor bytes.
func TestHFRoundTrip(t *testing.T) {
	src := open(t, tinyHF)
	out := filepath.Join(t.TempDir(), "tiny.gcvb")
	if err := edge.Write(out, src, edge.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	back := open(t, out)
	if back.Provenance.Format != "bundle" {
		t.Errorf("format %q", back.Provenance.Format)
	}
	if !reflect.DeepEqual(back.Config, src.Config) {
		t.Errorf("config:\n got %+v\nwant %+v", back.Config, src.Config)
	}
	if back.Config.NormOffset != 1 {
		t.Errorf("norm offset %v, want 1 (stored as is)", back.Config.NormOffset)
	}
	if !reflect.DeepEqual(back.Tokenizer, src.Tokenizer) {
		t.Error("tokenizer differs")
	}
	if !reflect.DeepEqual(back.Extra, src.Extra) {
		t.Errorf("extra:\n got %v\nwant %v", back.Extra, src.Extra)
	}
	sameTensors(t, back, src)
	if err := edge.Verify(out); err != nil {
		t.Fatal(err)
	}
}

// TestQuantizedRuns: a Q4_K_M bundle and the Q4_K_M GGUF of the same
// model hold the same tensors and give bit-identical logits in the
// runtime, close to gemma_pytorch's goldens.
func TestQuantizedRuns(t *testing.T) {
	dir := t.TempDir()
	bundlePath, ggufPath := filepath.Join(dir, "q.gcvb"), filepath.Join(dir, "q.gguf")
	for _, w := range []func(*ir.Model) error{
		func(m *ir.Model) error { return edge.Write(bundlePath, m, edge.WriteOptions{}) },
		func(m *ir.Model) error { return gguf.Write(ggufPath, m, gguf.WriteOptions{}) },
	} {
		src := open(t, tinyHF)
		res, err := quantize.Prepare(src, quantize.Options{Plan: quantize.PlanOptions{FileType: quantize.FileQ4_K_M}, Version: "test", NoSourceHash: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := w(res.Model); err != nil {
			t.Fatal(err)
		}
	}
	bm, gm := open(t, bundlePath), open(t, ggufPath)
	if !reflect.DeepEqual(bm.Config, gm.Config) {
		t.Errorf("config:\n bundle %+v\n gguf   %+v", bm.Config, gm.Config)
	}
	sameTensors(t, bm, gm)
	if ft, ok := bm.Lookup("general.file_type"); !ok || ft != uint32(quantize.FileQ4_K_M) {
		t.Errorf("general.file_type = %v, %v", ft, ok)
	}

	g, err := runtime.ReadGoldens(tinyGoldens)
	if err != nil {
		t.Fatal(err)
	}
	br, err := runtime.Load(bm, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gr, err := runtime.Load(gm, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bd, err := runtime.CompareGoldens(br, g)
	if err != nil {
		t.Fatal(err)
	}
	gd, err := runtime.CompareGoldens(gr, g)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(bd, gd) {
		t.Errorf("goldens comparison differs:\n bundle %+v\n gguf   %+v", bd, gd)
	}
	t.Logf("bundle vs goldens: %+v", bd)
	for i, d := range bd {
		// Q4_K_M on this model: a few percent from float32 goldens.
		if d.RelErr > 0.2 || d.ArgmaxAgree < 0.5 {
			t.Errorf("prompt %d: %+v is far from the goldens", i, d)
		}
	}
	p := g.Prompts[len(g.Prompts)-1]
	bl, err := br.Logits(p.TokenIDs)
	if err != nil {
		t.Fatal(err)
	}
	gl, err := gr.Logits(p.TokenIDs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range bl {
		if math.Float32bits(bl[i]) != math.Float32bits(gl[i]) {
			t.Fatalf("logit %d: bundle %v, gguf %v (want bit-identical)", i, bl[i], gl[i])
		}
	}
}

package testmodel

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

func needTokenizer(t *testing.T) {
	t.Helper()
	if _, err := TokenizerPath(); err != nil {
		t.Skipf("GEMMACONV_FIXTURES not set and no goldens/tokenizer/tokenizer.model: %v", err)
	}
}

func TestGemma2BConfig(t *testing.T) {
	c := Gemma2BConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var params int64
	for _, s := range ir.ExpectedTensors(c) {
		n := int64(1)
		for _, d := range s.Shape {
			n *= d
		}
		params += n
	}
	// Gemma 2B has about 2.51 billion parameters.
	if params < 2_500_000_000 || params > 2_520_000_000 {
		t.Errorf("%d parameters", params)
	}
	// The config survives config.json.
	js, err := hfConfigJSON(c, ir.BF16)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ir.ConfigFromHF(js)
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Fatalf("config.json reads back as %+v, %v", back, err)
	}
}

func TestWriteHF(t *testing.T) {
	needTokenizer(t)
	for _, fam := range []ir.Family{ir.Gemma1, ir.Gemma2, ir.Gemma3} {
		cfg := TinyConfig(fam)
		if fam == ir.Gemma3 {
			cfg.RopeScale = 8 // exercise rope_scaling
			cfg.FinalSoftcap = 30
		}
		dir := t.TempDir()
		if err := WriteHF(dir, cfg, 42, ir.BF16); err != nil {
			t.Fatal(err)
		}
		m, err := ir.Open(dir, ir.OpenOptions{})
		if err != nil {
			t.Fatalf("%s: %v", fam, err)
		}
		if !reflect.DeepEqual(m.Config, cfg) {
			t.Errorf("%s: config\n got %+v\nwant %+v", fam, m.Config, cfg)
		}
		if m.Tokenizer == nil || len(m.Tokenizer.Pieces) != cfg.Vocab {
			t.Errorf("%s: tokenizer", fam)
		}
		// Weights look like N(0, 0.02), norms like N(0, 0.05).
		for _, tn := range []*ir.Tensor{m.Tensor("blk.0.ffn_up.weight"), m.Tensor("blk.1.attn_norm.weight")} {
			want := WeightStd
			if ir.IsNormWeight(tn.Name) {
				want = NormStd
			}
			raw := make([]byte, tn.Size())
			if _, err := tn.Source.ReadAt(raw, 0); err != nil {
				t.Fatal(err)
			}
			vals := make([]float32, tn.NumElements())
			ir.DecodeFloats(tn.DType, raw, vals)
			var sum, sq float64
			for _, v := range vals {
				sum += float64(v)
				sq += float64(v) * float64(v)
			}
			n := float64(len(vals))
			mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
			if math.Abs(mean) > 4*want/math.Sqrt(n) || math.Abs(std-want) > 5*want/math.Sqrt(2*n) {
				t.Errorf("%s %s: mean %g std %g, want 0 and %g", fam, tn.Name, mean, std, want)
			}
		}
		m.Close()
	}
}

func TestDeterministic(t *testing.T) {
	needTokenizer(t)
	cfg := TinyConfig(ir.Gemma2)
	read := func(seed int64, dt ir.DType) []byte {
		dir := t.TempDir()
		if err := WriteHF(dir, cfg, seed, dt); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := read(1, ir.F32), read(1, ir.F32), read(2, ir.F32)
	if !bytes.Equal(a, b) {
		t.Error("same seed, different files")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds, same file")
	}
	// F16 and BF16 are the F32 values rounded.
	f, err := safetensors.OpenBytes("f32", a)
	if err != nil {
		t.Fatal(err)
	}
	h, err := safetensors.OpenBytes("f16", read(1, ir.F16))
	if err != nil {
		t.Fatal(err)
	}
	t32, _ := f.Tensor("model.layers.0.mlp.up_proj.weight")
	t16, _ := h.Tensor("model.layers.0.mlp.up_proj.weight")
	v32, v16 := make([]float32, t32.NumElements()), make([]float32, t16.NumElements())
	r32, r16 := make([]byte, t32.Size()), make([]byte, t16.Size())
	t32.Source.ReadAt(r32, 0)
	t16.Source.ReadAt(r16, 0)
	ir.DecodeFloats(ir.F32, r32, v32)
	ir.DecodeFloats(ir.F16, r16, v16)
	for i := range v32 {
		if math.Abs(float64(v32[i]-v16[i])) > 1e-3*math.Abs(float64(v32[i]))+1e-7 {
			t.Fatalf("value %d: F32 %g, F16 %g", i, v32[i], v16[i])
		}
	}
}

// TestRandomSourceReadAt: arbitrary windows agree with a whole read.
func TestRandomSourceReadAt(t *testing.T) {
	s := &RandomSource{DType: ir.BF16, Rows: 7, Cols: 13, Seed: 3, Stream: 1, Std: 1}
	whole := make([]byte, s.Size())
	if n, err := s.ReadAt(whole, 0); n != len(whole) || err != nil {
		t.Fatal(n, err)
	}
	for _, w := range [][2]int64{{0, 1}, {5, 30}, {25, 26}, {100, 82}, {181, 1}} {
		p := make([]byte, w[1])
		n, _ := s.ReadAt(p, w[0])
		if !bytes.Equal(p[:n], whole[w[0]:w[0]+int64(n)]) || int64(n) != min(w[1], s.Size()-w[0]) {
			t.Errorf("window %v: n=%d", w, n)
		}
	}
}

func TestInexpressibleConfig(t *testing.T) {
	cfg := TinyConfig(ir.Gemma1)
	cfg.AttnSoftcap = 50 // Gemma 1 has no softcap key
	err := WriteHF(t.TempDir(), cfg, 1, ir.BF16)
	if err == nil || !strings.Contains(err.Error(), "cannot be expressed") {
		t.Fatalf("error %v", err)
	}
	if err := WriteHF(t.TempDir(), TinyConfig(ir.Gemma1), 1, ir.Q4_0); err == nil {
		t.Error("Q4_0 checkpoint written")
	}
}

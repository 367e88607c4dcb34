package runtime

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// synthConfig is a small Gemma 3-style config that exercises every feature:
// GQA, QK-norm, sandwich norms, both softcaps, local and global layers with
// different RoPE bases, linear RoPE scaling and a short window.
func synthConfig() ir.Config {
	c := ir.Config{
		Family: ir.Gemma3, NumLayers: 3, Hidden: 64, FFN: 128, NumHeads: 4, NumKVHeads: 2, HeadDim: 16,
		Vocab: 256, ContextLength: 1024, RMSNormEps: 1e-6, RopeBase: 1e6, RopeBaseLocal: 1e4, RopeScale: 8,
		SlidingWindow: 5, AttnSoftcap: 50, FinalSoftcap: 30, QueryPreAttnScalar: 16, QKNorm: true,
		PostNorms: true, TiedEmbeddings: true, NormOffset: 1,
	}
	c.Sliding = []bool{true, false, true}
	return c
}

// synthConfigWide is synthConfig with rows wide enough for the 256-value
// blocks of the k-quants.
func synthConfigWide() ir.Config {
	c := synthConfig()
	c.Hidden, c.FFN, c.HeadDim, c.QueryPreAttnScalar = 256, 512, 64, 64
	return c
}

// synthValues returns the float32 values of every tensor of a random model
// with config c, keyed by canonical name. Matrices have standard deviation
// 1/sqrt(cols) so activations stay in a realistic range.
func synthValues(c ir.Config, seed uint64) map[string][]float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	vals := map[string][]float32{}
	for _, s := range ir.ExpectedTensors(c) {
		n := int64(1)
		for _, d := range s.Shape {
			n *= d
		}
		v := make([]float32, n)
		scale := 1 / math.Sqrt(float64(s.Shape[len(s.Shape)-1]))
		if ir.IsNormWeight(s.Name) {
			scale = 0.2
		}
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		vals[s.Name] = v
	}
	return vals
}

// synthModel builds an in-memory ir.Model from values, storing matrices as
// dtype (norms stay F32). It fails the test when dtype has no quantizer.
func synthModel(t testing.TB, c ir.Config, vals map[string][]float32, dtype ir.DType) *ir.Model {
	t.Helper()
	m := &ir.Model{Config: c, Tokenizer: &ir.Tokenizer{BOS: 2, AddBOS: true}}
	for _, s := range ir.ExpectedTensors(c) {
		v := vals[s.Name]
		typ := dtype
		if len(s.Shape) == 1 {
			typ = ir.F32
		}
		cols := int(s.Shape[len(s.Shape)-1])
		rb, err := ir.RowBytes(typ, int64(cols))
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, int(rb)*(len(v)/cols))
		if typ == ir.F32 {
			ir.EncodeF32(v, data)
		} else if _, err := quantize.QuantizeRows(typ, v, cols, nil, data); err != nil {
			t.Fatalf("%s as %s: %v", s.Name, typ, err)
		}
		m.Tensors = append(m.Tensors, &ir.Tensor{Name: s.Name, DType: typ, Shape: s.Shape, Source: bytes.NewReader(data)})
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// dequantized returns the float32 values a model's tensors decode to.
func dequantized(t testing.TB, m *ir.Model) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for _, tn := range m.Tensors {
		raw := make([]byte, tn.Size())
		if _, err := tn.Source.ReadAt(raw, 0); err != nil {
			t.Fatal(err)
		}
		v := make([]float32, tn.NumElements())
		dec, err := decoder(tn.DType)
		if err != nil {
			t.Fatal(err)
		}
		if err := dec(raw, v); err != nil {
			t.Fatal(err)
		}
		out[tn.Name] = v
	}
	return out
}

// randomTokens returns n token ids in [3, vocab).
func randomTokens(n, vocab int, seed uint64) []int32 {
	rng := rand.New(rand.NewPCG(seed, 11))
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(3 + rng.IntN(vocab-3))
	}
	return t
}

func mustLoad(t testing.TB, m *ir.Model, o Options) *Model {
	t.Helper()
	md, err := Load(m, o)
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func mustLogits(t testing.TB, md *Model, tokens []int32) []float32 {
	t.Helper()
	l, err := md.Logits(tokens)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// sameBits reports the first index where a and b differ bitwise, or -1.
func sameBits(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

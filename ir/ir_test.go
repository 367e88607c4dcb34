package ir

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestConfigFromHFDefaultsAndNulls(t *testing.T) {
	base := `"vocab_size": 4096, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64`
	// Gemma 2: absent softcaps take transformers' defaults, explicit null turns them off.
	c, err := ConfigFromHF([]byte(`{"model_type": "gemma2", ` + base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.AttnSoftcap != 50 || c.FinalSoftcap != 30 || c.SlidingWindow != 4096 || !c.PostNorms || c.NormOffset != 1 {
		t.Errorf("gemma2 defaults: %+v", c)
	}
	if want := []bool{true, false, true, false}; !slices.Equal(c.Sliding, want) {
		t.Errorf("gemma2 layer pattern %v, want %v", c.Sliding, want)
	}
	c, err = ConfigFromHF([]byte(`{"model_type": "gemma2", "final_logit_softcapping": null, "attn_logit_softcapping": 20.0, ` + base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.FinalSoftcap != 0 || c.AttnSoftcap != 20 {
		t.Errorf("explicit null/number softcaps: attn %g final %g", c.AttnSoftcap, c.FinalSoftcap)
	}
	// Gemma 3 multimodal: the text_config is used, rope scaling applies.
	c, err = ConfigFromHF([]byte(`{"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", ` + base +
		`, "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window_pattern": 2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Family != Gemma3 || c.RopeScale != 8 || c.RopeBase != 1e6 || c.RopeBaseLocal != 1e4 || !c.QKNorm {
		t.Errorf("gemma3 text_config: %+v", c)
	}
	if want := []bool{true, false, true, false}; !slices.Equal(c.Sliding, want) {
		t.Errorf("sliding_window_pattern 2 gave %v", c.Sliding)
	}
	for _, bad := range []string{
		`{"model_type": "llama", ` + base + `}`,
		`{"model_type": "gemma"}`,
		`{"model_type": "gemma", "hidden_activation": "relu", ` + base + `}`,
		`{"model_type": "gemma", "layer_types": ["full_attention"], ` + base + `}`,
		`{"model_type": "gemma", "num_key_value_heads": 3, "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4}`,
		`not json`,
	} {
		if _, err := ConfigFromHF([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// tinyModel builds a valid Gemma 1 model with BF16 zeros (norms 0.5).
func tinyModel(t *testing.T) *Model {
	t.Helper()
	c := Config{Family: Gemma1, NumLayers: 1, Hidden: 4, FFN: 8, NumHeads: 2, NumKVHeads: 1, HeadDim: 2, Vocab: 6,
		RMSNormEps: 1e-6, RopeBase: 1e4, RopeBaseLocal: 1e4, RopeScale: 1, QueryPreAttnScalar: 2,
		TiedEmbeddings: true, NormOffset: 1, Sliding: DefaultSliding(Gemma1, 1)}
	m := &Model{Config: c}
	specs := ExpectedTensors(c)
	for i := len(specs) - 1; i >= 0; i-- { // reverse order: SortTensors must fix it
		s := specs[i]
		n := int64(1)
		for _, d := range s.Shape {
			n *= d
		}
		data := make([]byte, 2*n)
		if IsNormWeight(s.Name) {
			for j := 0; j < len(data); j += 2 {
				data[j+1] = 0x3f // bf16 0.5
			}
		}
		m.Tensors = append(m.Tensors, &Tensor{Name: s.Name, DType: BF16, Shape: s.Shape, Source: bytes.NewReader(data)})
	}
	return m
}

func TestValidateAndOrder(t *testing.T) {
	m := tinyModel(t)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	SortTensors(m.Tensors)
	want := ExpectedTensors(m.Config)
	for i, s := range want {
		if m.Tensors[i].Name != s.Name {
			t.Fatalf("canonical order: position %d is %s, want %s", i, m.Tensors[i].Name, s.Name)
		}
	}
	m.Tensors[1].Shape = []int64{5}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), m.Tensors[1].Name) {
		t.Errorf("wrong shape not reported by name: %v", err)
	}
	m = tinyModel(t)
	m.Tensors = m.Tensors[1:]
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing tensor not reported: %v", err)
	}
	m = tinyModel(t)
	m.Tensors = append(m.Tensors, &Tensor{Name: "blk.0.extra.weight", DType: F32, Shape: []int64{1}, Source: bytes.NewReader(make([]byte, 4))})
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "blk.0.extra.weight") {
		t.Errorf("unknown tensor not reported: %v", err)
	}
}

func TestWithNormOffset(t *testing.T) {
	m := tinyModel(t)
	g, err := WithNormOffset(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Config.NormOffset != 0 || m.Config.NormOffset != 1 {
		t.Fatalf("offsets: derived %g, original %g", g.Config.NormOffset, m.Config.NormOffset)
	}
	n := g.Tensor("output_norm.weight")
	if n.DType != F32 {
		t.Fatalf("norm type %s, want F32", n.DType)
	}
	raw := make([]byte, n.Size())
	if err := n.ReadRows(0, 1, raw); err != nil {
		t.Fatal(err)
	}
	vals := make([]float32, 4)
	if err := DecodeFloats(F32, raw, vals); err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		if v != 1.5 {
			t.Fatalf("norm value %g, want 1 + 0.5", v)
		}
	}
	if g.Tensor("blk.0.attn_q.weight") != m.Tensor("blk.0.attn_q.weight") {
		t.Error("non-norm tensors must be shared, not copied")
	}
}

func TestDTypeTable(t *testing.T) {
	for _, c := range []struct {
		t    DType
		n    int64
		want int64
	}{{F32, 256, 1024}, {BF16, 3, 6}, {Q4_K, 512, 288}, {Q8_0, 64, 68}, {MXFP4, 32, 17}, {IQ4_XS, 256, 136}} {
		got, err := RowBytes(c.t, c.n)
		if err != nil || got != c.want {
			t.Errorf("RowBytes(%s, %d) = %d, %v; want %d", c.t, c.n, got, err, c.want)
		}
	}
	if _, err := RowBytes(Q4_K, 100); err == nil {
		t.Error("a row that is not whole blocks must be refused")
	}
	if ty, err := ParseDType("q4_k"); err != nil || ty != Q4_K {
		t.Errorf("ParseDType(q4_k) = %v, %v", ty, err)
	}
	if DType(4).Known() {
		t.Error("retired ggml type 4 must be unknown")
	}
}

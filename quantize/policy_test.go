package quantize

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// zeroSource is a tensor source of zeros; the policy never reads data.
type zeroSource struct{}

func (zeroSource) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}

var _ io.ReaderAt = zeroSource{}

// planModel builds a model with every tensor the config implies, as the
// converter stores them: matrices in dtype, 1-D tensors F32.
func planModel(c ir.Config, dtype ir.DType) *ir.Model {
	c.Sliding = ir.DefaultSliding(c.Family, c.NumLayers)
	m := &ir.Model{Config: c}
	for _, s := range ir.ExpectedTensors(c) {
		t := &ir.Tensor{Name: s.Name, DType: dtype, Shape: s.Shape, Source: zeroSource{}}
		if len(s.Shape) == 1 {
			t.DType = ir.F32
		}
		m.Tensors = append(m.Tensors, t)
	}
	return m
}

// The fixture models' shapes (shared/fixtures/*-tiny).
var (
	tinyGemma1 = ir.Config{Family: ir.Gemma1, NumLayers: 4, Hidden: 256, FFN: 1024, NumHeads: 4, NumKVHeads: 1, HeadDim: 64, Vocab: 4096, TiedEmbeddings: true}
	tinyGemma2 = ir.Config{Family: ir.Gemma2, NumLayers: 4, Hidden: 256, FFN: 1024, NumHeads: 4, NumKVHeads: 2, HeadDim: 64, Vocab: 4096, TiedEmbeddings: true, PostNorms: true}
	tinyGemma3 = ir.Config{Family: ir.Gemma3, NumLayers: 6, Hidden: 256, FFN: 1024, NumHeads: 4, NumKVHeads: 2, HeadDim: 64, Vocab: 4096, TiedEmbeddings: true, PostNorms: true, QKNorm: true}
	// Real model shapes.
	gemma2B  = ir.Config{Family: ir.Gemma1, NumLayers: 18, Hidden: 2048, FFN: 16384, NumHeads: 8, NumKVHeads: 1, HeadDim: 256, Vocab: 256000, TiedEmbeddings: true}
	gemma7B  = ir.Config{Family: ir.Gemma1, NumLayers: 28, Hidden: 3072, FFN: 24576, NumHeads: 16, NumKVHeads: 16, HeadDim: 256, Vocab: 256000, TiedEmbeddings: true}
	gemma3_1 = ir.Config{Family: ir.Gemma3, NumLayers: 26, Hidden: 1152, FFN: 6912, NumHeads: 4, NumKVHeads: 1, HeadDim: 256, Vocab: 262144, TiedEmbeddings: true, PostNorms: true, QKNorm: true}
)

func mustPlan(t *testing.T, m *ir.Model, opts PlanOptions) map[string]ir.DType {
	t.Helper()
	types, ft, err := Plan(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	if ft != opts.FileType {
		t.Fatalf("file type %s, want %s", ft, opts.FileType)
	}
	return types
}

// layerTypes collects the type of blk.N.<suffix> for every layer.
func layerTypes(types map[string]ir.DType, layers int, suffix string) []ir.DType {
	out := make([]ir.DType, layers)
	for i := range out {
		out[i] = types[fmt.Sprintf("blk.%d.%s", i, suffix)]
	}
	return out
}

// typesFor expands a layer set into per-layer types: in for the layers
// listed, otherwise out.
func typesFor(layers int, in ir.DType, set []int, out ir.DType) []ir.DType {
	r := make([]ir.DType, layers)
	for i := range r {
		r[i] = out
	}
	for _, i := range set {
		r[i] = in
	}
	return r
}

func equalTypes(a, b []ir.DType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestUseMoreBits(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []int
	}{
		{4, []int{2, 3}},
		{6, []int{2, 5}},
		{18, []int{0, 1, 4, 7, 10, 13, 15, 16, 17}},
		{26, []int{0, 1, 2, 5, 8, 11, 14, 17, 20, 22, 23, 24, 25}},
		{28, []int{0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27}},
	} {
		var got []int
		for i := 0; i < tc.n; i++ {
			if useMoreBits(i, tc.n) {
				got = append(got, i)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("use_more_bits over %d layers: %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestPlanTinyPresets(t *testing.T) {
	// Expected from llama-quantize on the fixture models (llamacpp.json).
	for _, tc := range []struct {
		cfg        ir.Config
		ft         FileType
		embd       ir.DType
		attnV      []ir.DType
		ffnDown    []ir.DType
		attnOut    ir.DType
		attnQ, ffn ir.DType
	}{
		{tinyGemma1, FileQ8_0, ir.Q8_0, typesFor(4, ir.Q8_0, nil, ir.Q8_0), typesFor(4, ir.Q8_0, nil, ir.Q8_0), ir.Q8_0, ir.Q8_0, ir.Q8_0},
		{tinyGemma1, FileQ4_0, ir.Q6_K, typesFor(4, ir.Q4_0, nil, ir.Q4_0), typesFor(4, ir.Q4_0, nil, ir.Q4_0), ir.Q4_0, ir.Q4_0, ir.Q4_0},
		{tinyGemma1, FileQ2_K, ir.Q6_K, typesFor(4, ir.Q4_K, nil, ir.Q4_K), typesFor(4, ir.Q3_K, nil, ir.Q3_K), ir.Q3_K, ir.Q2_K, ir.Q2_K},
		{tinyGemma2, FileQ2_K, ir.Q6_K, typesFor(4, ir.Q3_K, nil, ir.Q3_K), typesFor(4, ir.Q3_K, nil, ir.Q3_K), ir.Q3_K, ir.Q2_K, ir.Q2_K},
		{tinyGemma1, FileQ3_K_S, ir.Q6_K, typesFor(4, ir.Q3_K, nil, ir.Q3_K), typesFor(4, ir.Q3_K, nil, ir.Q3_K), ir.Q3_K, ir.Q3_K, ir.Q3_K},
		{tinyGemma1, FileQ3_K_M, ir.Q6_K, typesFor(4, ir.Q5_K, []int{0, 1}, ir.Q4_K), typesFor(4, ir.Q4_K, nil, ir.Q4_K), ir.Q4_K, ir.Q3_K, ir.Q3_K},
		{tinyGemma1, FileQ4_K_S, ir.Q6_K, typesFor(4, ir.Q5_K, nil, ir.Q5_K), typesFor(4, ir.Q4_K, nil, ir.Q4_K), ir.Q4_K, ir.Q4_K, ir.Q4_K},
		{tinyGemma3, FileQ4_K_S, ir.Q6_K, typesFor(6, ir.Q5_K, []int{0, 1, 2, 3}, ir.Q4_K), typesFor(6, ir.Q4_K, nil, ir.Q4_K), ir.Q4_K, ir.Q4_K, ir.Q4_K},
		{tinyGemma1, FileQ4_K_M, ir.Q6_K, typesFor(4, ir.Q6_K, []int{2, 3}, ir.Q4_K), typesFor(4, ir.Q6_K, []int{2, 3}, ir.Q4_K), ir.Q4_K, ir.Q4_K, ir.Q4_K},
		{tinyGemma3, FileQ4_K_M, ir.Q6_K, typesFor(6, ir.Q6_K, []int{2, 5}, ir.Q4_K), typesFor(6, ir.Q6_K, []int{2, 5}, ir.Q4_K), ir.Q4_K, ir.Q4_K, ir.Q4_K},
		{tinyGemma2, FileQ5_K_M, ir.Q6_K, typesFor(4, ir.Q6_K, []int{2, 3}, ir.Q5_K), typesFor(4, ir.Q6_K, []int{2, 3}, ir.Q5_K), ir.Q5_K, ir.Q5_K, ir.Q5_K},
		{tinyGemma2, FileQ5_K_S, ir.Q6_K, typesFor(4, ir.Q5_K, nil, ir.Q5_K), typesFor(4, ir.Q5_K, nil, ir.Q5_K), ir.Q5_K, ir.Q5_K, ir.Q5_K},
		{tinyGemma2, FileQ6_K, ir.Q6_K, typesFor(4, ir.Q6_K, nil, ir.Q6_K), typesFor(4, ir.Q6_K, nil, ir.Q6_K), ir.Q6_K, ir.Q6_K, ir.Q6_K},
		// IQ4: attn_v is Q5_K only with 4+ query heads per kv head.
		{tinyGemma1, FileIQ4_XS, ir.Q6_K, typesFor(4, ir.Q5_K, nil, ir.Q5_K), typesFor(4, ir.IQ4_XS, nil, ir.IQ4_XS), ir.IQ4_XS, ir.IQ4_XS, ir.IQ4_XS},
		{tinyGemma2, FileIQ4_NL, ir.Q6_K, typesFor(4, ir.IQ4_NL, nil, ir.IQ4_NL), typesFor(4, ir.IQ4_NL, nil, ir.IQ4_NL), ir.IQ4_NL, ir.IQ4_NL, ir.IQ4_NL},
	} {
		name := fmt.Sprintf("%s/%s", tc.cfg.Family, tc.ft)
		types := mustPlan(t, planModel(tc.cfg, ir.F32), PlanOptions{FileType: tc.ft})
		n := tc.cfg.NumLayers
		if got := types["token_embd.weight"]; got != tc.embd {
			t.Errorf("%s: token_embd %s, want %s", name, got, tc.embd)
		}
		if got := layerTypes(types, n, "attn_v.weight"); !equalTypes(got, tc.attnV) {
			t.Errorf("%s: attn_v %v, want %v", name, got, tc.attnV)
		}
		if got := layerTypes(types, n, "ffn_down.weight"); !equalTypes(got, tc.ffnDown) {
			t.Errorf("%s: ffn_down %v, want %v", name, got, tc.ffnDown)
		}
		for _, s := range []struct {
			suffix string
			want   ir.DType
		}{{"attn_output.weight", tc.attnOut}, {"attn_q.weight", tc.attnQ}, {"attn_k.weight", tc.attnQ}, {"ffn_gate.weight", tc.ffn}, {"ffn_up.weight", tc.ffn}} {
			if got := layerTypes(types, n, s.suffix); !equalTypes(got, typesFor(n, s.want, nil, s.want)) {
				t.Errorf("%s: %s %v, want all %s", name, s.suffix, got, s.want)
			}
		}
		for name, ty := range types {
			if strings.HasSuffix(name, "_norm.weight") && ty != ir.F32 {
				t.Errorf("%s: norm %s planned as %s", tc.ft, name, ty)
			}
		}
	}
}

func TestPlanGemma2B(t *testing.T) {
	m := planModel(gemma2B, ir.BF16)
	more := []int{0, 1, 4, 7, 10, 13, 15, 16, 17}
	types := mustPlan(t, m, PlanOptions{FileType: FileQ4_K_M})
	if got, want := layerTypes(types, 18, "attn_v.weight"), typesFor(18, ir.Q6_K, more, ir.Q4_K); !equalTypes(got, want) {
		t.Errorf("Q4_K_M attn_v %v, want %v", got, want)
	}
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.Q6_K, more, ir.Q4_K); !equalTypes(got, want) {
		t.Errorf("Q4_K_M ffn_down %v, want %v", got, want)
	}
	if types["token_embd.weight"] != ir.Q6_K {
		t.Errorf("Q4_K_M token_embd %s, want Q6_K (tied embeddings take the output rule)", types["token_embd.weight"])
	}

	types = mustPlan(t, m, PlanOptions{FileType: FileQ3_K_M})
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.Q5_K, []int{0}, ir.Q4_K); !equalTypes(got, want) {
		t.Errorf("Q3_K_M ffn_down %v, want %v", got, want)
	}
	types = mustPlan(t, m, PlanOptions{FileType: FileQ4_K_S})
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.Q5_K, []int{0, 1}, ir.Q4_K); !equalTypes(got, want) {
		t.Errorf("Q4_K_S ffn_down %v, want %v", got, want)
	}
	if got, want := layerTypes(types, 18, "attn_v.weight"), typesFor(18, ir.Q5_K, []int{0, 1, 2, 3}, ir.Q4_K); !equalTypes(got, want) {
		t.Errorf("Q4_K_S attn_v %v, want %v", got, want)
	}

	// IQ4_XS: without an imatrix the first eighth of ffn_down is Q5_K.
	types = mustPlan(t, m, PlanOptions{FileType: FileIQ4_XS})
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.Q5_K, []int{0, 1}, ir.IQ4_XS); !equalTypes(got, want) {
		t.Errorf("IQ4_XS ffn_down %v, want %v", got, want)
	}
	types = mustPlan(t, m, PlanOptions{FileType: FileIQ4_XS, Imatrix: true})
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.IQ4_XS, nil, ir.IQ4_XS); !equalTypes(got, want) {
		t.Errorf("IQ4_XS+imatrix ffn_down %v, want %v", got, want)
	}
	// Q4_0 with an imatrix guards the first ffn_down layers with Q4_1.
	types = mustPlan(t, m, PlanOptions{FileType: FileQ4_0, Imatrix: true})
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.Q4_1, []int{0, 1}, ir.Q4_0); !equalTypes(got, want) {
		t.Errorf("Q4_0+imatrix ffn_down %v, want %v", got, want)
	}
	types = mustPlan(t, m, PlanOptions{FileType: FileQ5_0, Imatrix: true, Pure: true})
	if got, want := layerTypes(types, 18, "ffn_down.weight"), typesFor(18, ir.Q5_0, nil, ir.Q5_0); !equalTypes(got, want) {
		t.Errorf("pure Q5_0+imatrix ffn_down %v, want %v", got, want)
	}
}

func TestPlanGemma7B(t *testing.T) {
	m := planModel(gemma7B, ir.BF16)
	more := []int{0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27}
	types := mustPlan(t, m, PlanOptions{FileType: FileQ5_K_M})
	if got, want := layerTypes(types, 28, "attn_v.weight"), typesFor(28, ir.Q6_K, more, ir.Q5_K); !equalTypes(got, want) {
		t.Errorf("Q5_K_M attn_v %v, want %v", got, want)
	}
	if got, want := layerTypes(types, 28, "ffn_down.weight"), typesFor(28, ir.Q6_K, more, ir.Q5_K); !equalTypes(got, want) {
		t.Errorf("Q5_K_M ffn_down %v, want %v", got, want)
	}
	// MHA (gqa 1): IQ4_NL keeps attn_v at IQ4_NL; Q2_K gives it Q3_K.
	types = mustPlan(t, m, PlanOptions{FileType: FileIQ4_NL})
	if types["blk.5.attn_v.weight"] != ir.IQ4_NL {
		t.Errorf("IQ4_NL attn_v %s, want IQ4_NL", types["blk.5.attn_v.weight"])
	}
	types = mustPlan(t, m, PlanOptions{FileType: FileQ2_K})
	if types["blk.5.attn_v.weight"] != ir.Q3_K || types["blk.5.ffn_down.weight"] != ir.Q3_K || types["blk.5.attn_output.weight"] != ir.Q3_K {
		t.Errorf("Q2_K attn_v/ffn_down/attn_output %s/%s/%s, want Q3_K", types["blk.5.attn_v.weight"], types["blk.5.ffn_down.weight"], types["blk.5.attn_output.weight"])
	}
}

func TestPlanFallbacks(t *testing.T) {
	// Gemma 3 1B: 1152 columns are not a multiple of 256.
	m := planModel(gemma3_1, ir.BF16)
	ps, err := PlanTensors(m, PlanOptions{FileType: FileQ4_K_M})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]TensorPlan{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	for _, tc := range []struct {
		name     string
		want     ir.DType
		fallback bool
	}{
		{"token_embd.weight", ir.Q8_0, false}, // output rule: nx % 256 != 0 -> Q8_0
		{"blk.0.attn_q.weight", ir.Q5_0, true},
		{"blk.0.attn_v.weight", ir.Q8_0, true},    // Q6_K -> Q8_0
		{"blk.3.attn_v.weight", ir.Q5_0, true},    // Q4_K -> Q5_0
		{"blk.0.ffn_down.weight", ir.Q6_K, false}, // 6912 = 27*256
		{"blk.3.ffn_down.weight", ir.Q4_K, false},
		{"blk.3.ffn_up.weight", ir.Q5_0, true},
	} {
		p := byName[tc.name]
		if p.To != tc.want || p.Fallback != tc.fallback {
			t.Errorf("%s: %s (fallback %v), want %s (fallback %v)", tc.name, p.To, p.Fallback, tc.want, tc.fallback)
		}
	}
	types := mustPlan(t, m, PlanOptions{FileType: FileQ5_K_S})
	if types["blk.0.attn_q.weight"] != ir.Q5_1 {
		t.Errorf("Q5_K fallback %s, want Q5_1", types["blk.0.attn_q.weight"])
	}
	types = mustPlan(t, m, PlanOptions{FileType: FileIQ4_XS, Pure: true})
	if types["blk.0.attn_q.weight"] != ir.IQ4_NL || types["token_embd.weight"] != ir.IQ4_NL {
		t.Errorf("pure IQ4_XS fallback %s/%s, want IQ4_NL", types["blk.0.attn_q.weight"], types["token_embd.weight"])
	}
	types = mustPlan(t, m, PlanOptions{FileType: FileQ2_K, Pure: true})
	if types["blk.0.attn_q.weight"] != ir.Q4_0 {
		t.Errorf("Q2_K fallback %s, want Q4_0", types["blk.0.attn_q.weight"])
	}
	// A row length that not even a 32-block fits falls back to F16; a
	// legacy type has no fallback at all.
	odd := &ir.Model{Config: tinyGemma1, Tensors: []*ir.Tensor{
		{Name: "blk.0.attn_q.weight", DType: ir.F32, Shape: []int64{8, 100}, Source: zeroSource{}}}}
	types = mustPlan(t, odd, PlanOptions{FileType: FileQ4_K_M})
	if types["blk.0.attn_q.weight"] != ir.F16 {
		t.Errorf("100 columns: %s, want F16", types["blk.0.attn_q.weight"])
	}
	if _, _, err := Plan(odd, PlanOptions{FileType: FileQ4_0}); err == nil || !strings.Contains(err.Error(), "no fallback") {
		t.Errorf("Q4_0 on 100 columns: err %v, want no-fallback error", err)
	}
}

func TestPlanUntiedOutput(t *testing.T) {
	c := tinyGemma1
	c.TiedEmbeddings = false
	types := mustPlan(t, planModel(c, ir.F32), PlanOptions{FileType: FileQ4_K_M})
	if types["output.weight"] != ir.Q6_K || types["token_embd.weight"] != ir.Q4_K {
		t.Errorf("untied: output %s token_embd %s, want Q6_K Q4_K", types["output.weight"], types["token_embd.weight"])
	}
	types = mustPlan(t, planModel(c, ir.F32), PlanOptions{FileType: FileQ4_K_M, LeaveOutput: true})
	if types["output.weight"] != ir.F32 {
		t.Errorf("--leave-output-tensor: output %s, want F32", types["output.weight"])
	}
	q8 := ir.Q8_0
	types = mustPlan(t, planModel(c, ir.F32), PlanOptions{FileType: FileQ4_K_M, OutputType: &q8, TokenEmbeddingType: &q8})
	if types["output.weight"] != ir.Q8_0 || types["token_embd.weight"] != ir.Q8_0 {
		t.Errorf("explicit types: output %s token_embd %s, want Q8_0", types["output.weight"], types["token_embd.weight"])
	}
}

func TestPlanOverrides(t *testing.T) {
	m := planModel(tinyGemma1, ir.F32)
	var ovs []TensorTypeOverride
	for _, s := range []string{`BLK\.[01]\.ffn_down=q8_0`, `attn_v=Q5_K`, `attn=q2_k`} {
		o, err := ParseTensorTypeOverride(s)
		if err != nil {
			t.Fatal(err)
		}
		ovs = append(ovs, o)
	}
	types := mustPlan(t, m, PlanOptions{FileType: FileQ4_K_M, Overrides: ovs})
	for name, want := range map[string]ir.DType{
		"blk.0.ffn_down.weight": ir.Q8_0, "blk.1.ffn_down.weight": ir.Q8_0,
		// Overridden tensors do not advance the counters: blk.2 and blk.3
		// are the 0th and 1st ffn_down counted, so use_more_bits skips them.
		"blk.2.ffn_down.weight": ir.Q4_K, "blk.3.ffn_down.weight": ir.Q4_K,
		"blk.2.attn_v.weight": ir.Q5_K, "blk.0.attn_q.weight": ir.Q2_K, "blk.3.attn_output.weight": ir.Q2_K,
		"blk.0.ffn_up.weight": ir.Q4_K, "token_embd.weight": ir.Q6_K,
	} {
		if types[name] != want {
			t.Errorf("%s: %s, want %s", name, types[name], want)
		}
	}
	for _, bad := range []string{"attn_v", "=Q4_K", "attn_v=", "attn_v=Q9_K", "(=Q4_K"} {
		if _, err := ParseTensorTypeOverride(bad); err == nil {
			t.Errorf("ParseTensorTypeOverride(%q) succeeded", bad)
		}
	}
}

func TestPlanRequantize(t *testing.T) {
	m := planModel(tinyGemma1, ir.Q8_0)
	_, _, err := Plan(m, PlanOptions{FileType: FileQ4_K_M})
	if !errors.Is(err, ErrRequantize) {
		t.Fatalf("quantized source: err %v, want ErrRequantize", err)
	}
	types := mustPlan(t, m, PlanOptions{FileType: FileQ4_K_M, AllowRequantize: true})
	if types["blk.0.attn_q.weight"] != ir.Q4_K {
		t.Errorf("requantized attn_q %s", types["blk.0.attn_q.weight"])
	}
	// Same type everywhere: nothing to requantize, so no error.
	mustPlan(t, m, PlanOptions{FileType: FileQ8_0})
}

func TestPlanFloatPresets(t *testing.T) {
	types := mustPlan(t, planModel(tinyGemma3, ir.BF16), PlanOptions{FileType: FileF16})
	if types["token_embd.weight"] != ir.F16 || types["blk.0.attn_q.weight"] != ir.F16 || types["blk.0.attn_norm.weight"] != ir.F32 {
		t.Errorf("F16 preset: %s %s %s", types["token_embd.weight"], types["blk.0.attn_q.weight"], types["blk.0.attn_norm.weight"])
	}
	if _, _, err := Plan(planModel(tinyGemma3, ir.BF16), PlanOptions{FileType: FileQ3_K_L + 100}); err == nil {
		t.Error("unknown file type accepted")
	}
}

func TestLlamaOrder(t *testing.T) {
	names := []string{"token_embd.weight", "blk.10.attn_q.weight", "blk.2.ffn_up.weight", "output_norm.weight",
		"blk.2.attn_k.weight", "blk.0.post_ffw_norm.weight", "blk.0.attn_k_norm.weight", "output.weight"}
	var ts []*ir.Tensor
	for _, n := range names {
		ts = append(ts, &ir.Tensor{Name: n})
	}
	LlamaOrder(ts)
	var got []string
	for _, t := range ts {
		got = append(got, t.Name)
	}
	want := []string{"output.weight", "output_norm.weight", "token_embd.weight", "blk.0.attn_k_norm.weight",
		"blk.0.post_ffw_norm.weight", "blk.2.attn_k.weight", "blk.2.ffn_up.weight", "blk.10.attn_q.weight"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestPlanUnsupportedTypes(t *testing.T) {
	m := planModel(tinyGemma1, ir.F32)
	o, err := ParseTensorTypeOverride("ffn_up=iq2_xxs")
	if err != nil {
		t.Fatal(err)
	}
	// As in llama-quantize, the 2-bit i-quants need an importance matrix.
	if _, _, err := Plan(m, PlanOptions{FileType: FileQ4_K_M, Overrides: []TensorTypeOverride{o}}); err == nil || !strings.Contains(err.Error(), "importance matrix") {
		t.Errorf("IQ2_XXS without imatrix: %v", err)
	}
	// With one, the missing kernel is reported before any data is read.
	if _, _, err := Plan(m, PlanOptions{FileType: FileQ4_K_M, Overrides: []TensorTypeOverride{o}, Imatrix: true}); err == nil || !strings.Contains(err.Error(), "no quantizer for type IQ2_XXS") {
		t.Errorf("IQ2_XXS: %v", err)
	}
}

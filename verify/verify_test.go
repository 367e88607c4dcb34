package verify

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// memTensor stores float32 values as type t in memory.
func memTensor(t testing.TB, name string, typ ir.DType, shape []int64, vals []float32) *ir.Tensor {
	t.Helper()
	x := &ir.Tensor{Name: name, DType: typ, Shape: shape}
	buf := make([]byte, x.Size())
	if err := quantize.EncodeRows(typ, vals, int(x.Cols()), nil, buf); err != nil {
		t.Fatal(err)
	}
	x.Source = bytes.NewReader(buf)
	return x
}

func gaussian(n int, std float64, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * std)
	}
	return v
}

func compareOne(t *testing.T, a, s *ir.Tensor, aOff, sOff float32) TensorResult {
	t.Helper()
	am := &ir.Model{Config: ir.Config{NormOffset: aOff}, Tensors: []*ir.Tensor{a}}
	sm := &ir.Model{Config: ir.Config{NormOffset: sOff}, Tensors: []*ir.Tensor{s}}
	res, err := CompareTensors(am, sm, TensorOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	return res[0]
}

// TestFloatRounding: round-to-nearest conversions pass, truncation and a
// one-ulp change fail, F16 overflow fails as non-finite.
func TestFloatRounding(t *testing.T) {
	shape := []int64{64, 256}
	v := gaussian(64*256, 0.02, 1)
	src := memTensor(t, "blk.0.attn_q.weight", ir.F32, shape, v)
	for _, typ := range []ir.DType{ir.F32, ir.F16, ir.BF16} {
		r := compareOne(t, memTensor(t, "blk.0.attn_q.weight", typ, shape, v), src, 0, 0)
		if !r.Passed || r.Rule != "rounding" || r.MaxBoundRatio > 1 {
			t.Errorf("%s: rounded conversion fails: %+v", typ, r)
		}
		t.Logf("%s: max bound ratio %.3f, cosine %.9f, rel RMSE %.3g", typ, float64(r.MaxBoundRatio), float64(r.Cosine), float64(r.RelRMSE))
	}
	// BF16 by truncation (as a careless converter would do).
	trunc := make([]float32, len(v))
	for i, x := range v {
		trunc[i] = math.Float32frombits(math.Float32bits(x) &^ 0xffff)
	}
	r := compareOne(t, memTensor(t, "blk.0.attn_q.weight", ir.BF16, shape, trunc), src, 0, 0)
	if r.Passed || r.Violations == 0 {
		t.Errorf("truncated BF16 passes: %+v", r)
	}
	// F16 overflow.
	big := append([]float32(nil), v...)
	big[300] = 70000
	r = compareOne(t, memTensor(t, "blk.0.attn_q.weight", ir.F16, shape, big), memTensor(t, "blk.0.attn_q.weight", ir.F32, shape, big), 0, 0)
	if r.Passed || r.NonFinite != 1 || !strings.Contains(r.Reason, "element [1, 44]") {
		t.Errorf("F16 overflow: %+v", r)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("report with Inf figures does not marshal: %v", err)
	}
}

// TestNormOffsets compares norms across conventions: 1+w stored with
// offset 0 equals w with offset 1; 2+w does not.
func TestNormOffsets(t *testing.T) {
	w := gaussian(256, 0.05, 2)
	onePlus := make([]float32, len(w))
	twoPlus := make([]float32, len(w))
	for i, x := range w {
		onePlus[i] = 1 + x
		twoPlus[i] = 2 + x
	}
	src := memTensor(t, "blk.0.attn_norm.weight", ir.BF16, []int64{256}, w)
	bf := func(v []float32) []float32 { // w as stored in BF16, then offset in float32
		out := make([]float32, len(v))
		buf := make([]byte, 2*len(v))
		_ = quantize.EncodeRows(ir.BF16, w, len(w), nil, buf)
		_ = quantize.DecodeRows(ir.BF16, buf, out)
		for i := range out {
			out[i] += v[i] - w[i]
		}
		return out
	}
	r := compareOne(t, memTensor(t, "blk.0.attn_norm.weight", ir.F32, []int64{256}, bf(onePlus)), src, 0, 1)
	if !r.Passed || !r.Norm {
		t.Errorf("1+w against w: %+v", r)
	}
	// The reverse direction: a BF16 w from an F32 1+w source.
	r = compareOne(t, src, memTensor(t, "blk.0.attn_norm.weight", ir.F32, []int64{256}, bf(onePlus)), 1, 0)
	if !r.Passed {
		t.Errorf("w against 1+w: %+v", r)
	}
	r = compareOne(t, memTensor(t, "blk.0.attn_norm.weight", ir.F32, []int64{256}, bf(twoPlus)), src, 0, 1)
	if r.Passed || r.MaxAbs < 0.99 {
		t.Errorf("2+w against w passes: %+v", r)
	}
}

// TestQuantFloors: Q8_0 and Q4_K of Gaussian rows pass their floors; a
// tensor scaled by 1.5 keeps cosine 1 but fails the RMSE bound; an
// unrelated tensor fails the cosine floor.
func TestQuantFloors(t *testing.T) {
	shape := []int64{32, 512}
	v := gaussian(32*512, 0.02, 3)
	src := memTensor(t, "blk.0.ffn_up.weight", ir.BF16, shape, v)
	for _, typ := range []ir.DType{ir.Q8_0, ir.Q6_K, ir.Q5_K, ir.Q4_K, ir.Q4_0, ir.Q3_K, ir.Q2_K} {
		r := compareOne(t, memTensor(t, "blk.0.ffn_up.weight", typ, shape, v), src, 0, 0)
		t.Logf("%s: cosine %.5f, rel RMSE %.4f (floors %g, %g)", typ, float64(r.Cosine), float64(r.RelRMSE), float64(r.MinCosine), float64(r.MaxRelRMSE))
		if !r.Passed || r.Rule != "floor" {
			t.Errorf("%s fails: %s", typ, r.Reason)
		}
	}
	scaled := make([]float32, len(v))
	for i, x := range v {
		scaled[i] = 1.5 * x
	}
	r := compareOne(t, memTensor(t, "blk.0.ffn_up.weight", ir.Q8_0, shape, scaled), src, 0, 0)
	if r.Passed || r.Cosine < 0.999 || !strings.Contains(r.Reason, "relative RMS error") {
		t.Errorf("scaled Q8_0: %+v", r)
	}
	other := gaussian(32*512, 0.02, 4)
	r = compareOne(t, memTensor(t, "blk.0.ffn_up.weight", ir.Q4_K, shape, other), src, 0, 0)
	if r.Passed || !strings.Contains(r.Reason, "cosine") {
		t.Errorf("unrelated Q4_K: %+v", r)
	}
}

func tinyConfig() ir.Config {
	return ir.Config{Family: ir.Gemma2, NumLayers: 2, Hidden: 8, FFN: 16, NumHeads: 2, NumKVHeads: 1, HeadDim: 4, Vocab: 6,
		ContextLength: 64, RMSNormEps: 1e-6, RopeBase: 10000, RopeBaseLocal: 10000, RopeScale: 1, SlidingWindow: 4,
		Sliding: []bool{true, false}, AttnSoftcap: 50, FinalSoftcap: 30, QueryPreAttnScalar: 4, PostNorms: true,
		TiedEmbeddings: true, NormOffset: 1}
}

func TestCheckConfig(t *testing.T) {
	a, s := tinyConfig(), tinyConfig()
	a.NormOffset = 0
	a.RopeBase = 10000.0000001 // the same float32
	if c := CheckConfig(a, s); !c.Passed {
		t.Errorf("equal configs differ: %v", c.Differences)
	}
	a.FinalSoftcap = 0
	a.Sliding = []bool{false, false}
	c := CheckConfig(a, s)
	if c.Passed || len(c.Differences) != 2 || !strings.HasPrefix(c.Differences[0], "Sliding") && !strings.HasPrefix(c.Differences[0], "FinalSoftcap") {
		t.Errorf("differences %v", c.Differences)
	}
	// Without sliding layers the window size is irrelevant.
	a, s = tinyConfig(), tinyConfig()
	a.Sliding, s.Sliding = []bool{false, false}, []bool{false, false}
	a.SlidingWindow = 0
	if c := CheckConfig(a, s); !c.Passed {
		t.Errorf("window without sliding layers: %v", c.Differences)
	}
}

func tinyTokenizer() *ir.Tokenizer {
	return &ir.Tokenizer{Model: "llama", Pieces: []string{"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "▁a"},
		Scores: []float32{0, 0, 0, 0, 0, -1}, Types: []ir.TokenType{3, 3, 3, 2, 4, 1},
		BOS: 2, EOS: 1, UNK: 3, PAD: 0, EOT: -1, AddBOS: true, SplitDigits: true, Normalizer: "identity"}
}

func TestCheckTokenizer(t *testing.T) {
	s := tinyTokenizer()
	a := tinyTokenizer()
	a.Types = []ir.TokenType{3, 3, 3, 2, 1, 1} // user-defined typed normal, as GGUF
	a.Pieces = append(a.Pieces, "[PAD6]", "[PAD7]")
	a.Scores = append(a.Scores, -10000, -10000)
	a.Types = append(a.Types, ir.TokenUnused, ir.TokenUnused)
	a.Normalizer = ""
	c := CheckTokenizer(a, s)
	if !c.Passed || len(c.Notes) != 2 {
		t.Errorf("GGUF-style vocabulary: passed %v, differences %v, notes %v", c.Passed, c.Differences, c.Notes)
	}
	a = tinyTokenizer()
	a.Scores[5] = -1.0000001
	a.EOS = 2
	a.Pieces[0] = "<PAD>"
	c = CheckTokenizer(a, s)
	if c.Passed || c.DifferenceCount != 3 {
		t.Errorf("want 3 differences, got %v", c.Differences)
	}
	if c := CheckTokenizer(nil, s); c.Passed {
		t.Error("missing tokenizer passes")
	}
}

func TestTensorSet(t *testing.T) {
	x := func(name string, shape ...int64) *ir.Tensor {
		return &ir.Tensor{Name: name, DType: ir.F32, Shape: shape}
	}
	a := &ir.Model{Tensors: []*ir.Tensor{x("a", 2, 3), x("b", 3, 2), x("extra", 1)}}
	s := &ir.Model{Tensors: []*ir.Tensor{x("a", 2, 3), x("b", 2, 3), x("missing", 1)}}
	c := CheckTensorSet(a, s)
	if c.Passed || len(c.Missing) != 1 || len(c.Extra) != 1 || len(c.ShapeMismatches) != 1 || c.Missing[0] != "missing" || c.Extra[0] != "extra" {
		t.Errorf("%+v", c)
	}
}

func TestLogitStats(t *testing.T) {
	p := []float32{1, 2, 3, 0}
	if k := KLD(p, p); k != 0 {
		t.Errorf("KLD(p, p) = %g", k)
	}
	q := []float32{3, 2, 1, 0}
	// Direct formula in float64.
	sm := func(v []float32) []float64 {
		var s float64
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = math.Exp(float64(x))
			s += out[i]
		}
		for i := range out {
			out[i] /= s
		}
		return out
	}
	pp, qq := sm(p), sm(q)
	var want float64
	for i := range pp {
		want += pp[i] * math.Log(pp[i]/qq[i])
	}
	if got := KLD(p, q); math.Abs(got-want) > 1e-12 {
		t.Errorf("KLD = %.15g, want %.15g", got, want)
	}
	r, err := comparePrompt(append(p, q...), append(p, p...), 4, Tolerances{MinTop1: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Passed || r.Top1 != 0.5 || math.Abs(float64(r.KLDMean)-want/2) > 1e-12 {
		t.Errorf("%+v", r)
	}
	if s := (Tolerances{MaxRel: 1, MaxKLD: 1}).exceeded(math.NaN(), 0, 1, math.NaN()); !strings.Contains(s, "relative") || !strings.Contains(s, "KLD") {
		t.Errorf("NaN figures pass: %q", s)
	}
}

func TestNumJSON(t *testing.T) {
	in := []Num{1.5, Num(math.NaN()), Num(math.Inf(1)), Num(math.Inf(-1)), 0}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `[1.5,"NaN","+Inf","-Inf",0]` {
		t.Errorf("%s", b)
	}
	var out []Num
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out[0] != 1.5 || !math.IsNaN(float64(out[1])) || !math.IsInf(float64(out[2]), 1) || !math.IsInf(float64(out[3]), -1) {
		t.Errorf("%v", out)
	}
}

// TestReportSummary runs Run on two small in-memory models that differ in
// one tensor and checks the report, its JSON and its summary name it.
func TestReportSummary(t *testing.T) {
	cfg := tinyConfig()
	mk := func(perturb bool) *ir.Model {
		m := &ir.Model{Config: cfg, Tokenizer: tinyTokenizer(), Provenance: ir.Provenance{Format: "mem", Path: "mem"}}
		for i, spec := range ir.ExpectedTensors(cfg) {
			n := int64(1)
			for _, d := range spec.Shape {
				n *= d
			}
			v := gaussian(int(n), 0.02, uint64(i))
			if perturb && spec.Name == "blk.1.ffn_gate.weight" {
				v[5] += 0.01
			}
			m.Tensors = append(m.Tensors, memTensor(t, spec.Name, ir.F32, spec.Shape, v))
		}
		return m
	}
	rep, err := Run(mk(true), mk(false), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed || len(rep.Failures) != 1 || rep.Failures[0].Subject != "blk.1.ffn_gate.weight" {
		t.Fatalf("failures %v", rep.Failures)
	}
	var b strings.Builder
	rep.WriteSummary(&b)
	if !strings.Contains(b.String(), "FAIL weights") || !strings.Contains(b.String(), "blk.1.ffn_gate.weight: 1 of 128 elements") {
		t.Errorf("summary:\n%s", b.String())
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back["passed"] != false || back["weights"] == nil || back["goldens"] != nil {
		t.Errorf("JSON report: %s", js)
	}
	if rep, err = Run(mk(false), mk(false), Options{}); err != nil || !rep.Passed || rep.Err() != nil {
		t.Errorf("identical models: %v %v", err, rep.Failures)
	}
}

// TestUndecodable: a type without a dequantizer fails, naming the reason,
// instead of aborting the run.
func TestUndecodable(t *testing.T) {
	v := gaussian(256, 0.02, 5)
	src := memTensor(t, "blk.0.attn_q.weight", ir.F32, []int64{1, 256}, v)
	a := &ir.Tensor{Name: "blk.0.attn_q.weight", DType: ir.IQ2_XXS, Shape: []int64{1, 256}, Source: bytes.NewReader(make([]byte, 66))}
	if err := quantize.DecodeRows(ir.IQ2_XXS, make([]byte, 66), make([]float32, 256)); err == nil {
		t.Skip("IQ2_XXS has a dequantizer now; nothing left undecodable to test with")
	}
	r := compareOne(t, a, src, 0, 0)
	if r.Passed || r.Rule != "undecodable" || !strings.Contains(r.Reason, "IQ2_XXS") {
		t.Errorf("%+v", r)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Error(err)
	}
}

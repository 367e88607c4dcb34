package runtime

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// TestDeterminism checks that logits are bit-identical whatever the worker
// count, caching, batch size (which also changes the sliding layers' KV
// ring size) and the way the sequence is split into Forward calls.
func TestDeterminism(t *testing.T) {
	c := synthConfig()
	im := synthModel(t, c, synthValues(c, 1), ir.BF16)
	toks := randomTokens(23, c.Vocab, 2)
	ref := mustLogits(t, mustLoad(t, im, Options{Workers: 1, Cache: CacheNone}), toks)
	saved := hasAVX2
	hasAVX2 = false // the pure Go kernels
	goKernels := mustLogits(t, mustLoad(t, im, Options{Workers: 2}), toks)
	hasAVX2 = saved
	if i := sameBits(goKernels, ref); i >= 0 {
		t.Errorf("Go kernels differ from the assembly ones at %d", i)
	}
	for _, o := range []Options{
		{Workers: 2, Cache: CacheNone}, {Workers: 3, Cache: CacheAll}, {Workers: 7, Cache: CacheAuto},
		{Workers: 2, BatchSize: 1}, {Workers: 2, BatchSize: 3, Cache: CacheAll},
	} {
		md := mustLoad(t, im, o)
		if i := sameBits(mustLogits(t, md, toks), ref); i >= 0 {
			t.Errorf("%+v: logits differ from 1 worker at %d", o, i)
		}
		// The same sequence fed in pieces of 1, 2, 3, ... tokens.
		st := md.NewState(len(toks))
		var got []float32
		for i, k := 0, 1; i < len(toks); i, k = i+k, k+1 {
			l, err := st.Forward(toks[i:min(i+k, len(toks))])
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, l...)
		}
		if i := sameBits(got, ref); i >= 0 {
			t.Errorf("%+v: incremental logits differ at %d", o, i)
		}
		st.Reset()
		last, err := st.ForwardLast(toks)
		if err != nil {
			t.Fatal(err)
		}
		if i := sameBits(last, ref[(len(toks)-1)*c.Vocab:]); i >= 0 {
			t.Errorf("%+v: ForwardLast differs at %d", o, i)
		}
	}
}

// TestStoredTypes checks that every weight type plugs in without the model
// code knowing it: a model stored as type T gives exactly the logits of an
// F32 model holding T's dequantized values.
func TestStoredTypes(t *testing.T) {
	c := synthConfigWide()
	vals := synthValues(c, 3)
	toks := randomTokens(12, c.Vocab, 4)
	for _, typ := range []ir.DType{ir.F32, ir.F16, ir.BF16, ir.Q8_0, ir.Q4_0, ir.Q5_1, ir.Q4_K, ir.Q6_K, ir.IQ4_XS} {
		if k, ok := quantize.Lookup(typ); typ != ir.F32 && (!ok || k.Quantize == nil) {
			t.Logf("%s: no quantizer registered, skipped", typ)
			continue
		}
		q := synthModel(t, c, vals, typ)
		twin := synthModel(t, c, dequantized(t, q), ir.F32)
		got := mustLogits(t, mustLoad(t, q, Options{Cache: CacheNone}), toks)
		want := mustLogits(t, mustLoad(t, twin, Options{Cache: CacheNone}), toks)
		if i := sameBits(got, want); i >= 0 {
			t.Errorf("%s: logits differ from the dequantized F32 model at %d: %v vs %v", typ, i, got[i], want[i])
		}
	}
}

// TestNormOffset checks that a model whose norms hold 1+w (GGUF's
// convention) computes the same bits as one holding w.
func TestNormOffset(t *testing.T) {
	c := synthConfig()
	im := synthModel(t, c, synthValues(c, 5), ir.F16)
	g, err := ir.WithNormOffset(im, 0)
	if err != nil {
		t.Fatal(err)
	}
	toks := randomTokens(9, c.Vocab, 6)
	if i := sameBits(mustLogits(t, mustLoad(t, g, Options{}), toks), mustLogits(t, mustLoad(t, im, Options{}), toks)); i >= 0 {
		t.Errorf("NormOffset 0 model differs at %d", i)
	}
}

// TestFamilies runs Gemma 1 and Gemma 2 shaped configs (MQA, MHA, untied
// output) through the determinism check and checks the softcap bound.
func TestFamilies(t *testing.T) {
	g1 := synthConfig()
	g1.Family, g1.NumKVHeads, g1.QKNorm, g1.PostNorms = ir.Gemma1, 1, false, false
	g1.AttnSoftcap, g1.FinalSoftcap, g1.SlidingWindow, g1.RopeBaseLocal, g1.RopeBase, g1.RopeScale = 0, 0, 0, 1e4, 1e4, 1
	g1.Sliding = make([]bool, g1.NumLayers)
	g1.QueryPreAttnScalar = float64(g1.HeadDim)
	g2 := synthConfig()
	g2.Family, g2.NumKVHeads, g2.QKNorm, g2.TiedEmbeddings = ir.Gemma2, 4, false, false
	g2.RopeBaseLocal, g2.RopeBase, g2.RopeScale = 1e4, 1e4, 1
	for _, c := range []ir.Config{g1, g2} {
		im := synthModel(t, c, synthValues(c, 8), ir.BF16)
		toks := randomTokens(17, c.Vocab, 9)
		a := mustLogits(t, mustLoad(t, im, Options{Workers: 1}), toks)
		b := mustLogits(t, mustLoad(t, im, Options{Workers: 3, BatchSize: 2}), toks)
		if i := sameBits(a, b); i >= 0 {
			t.Errorf("%s: logits differ at %d", c.Family, i)
		}
		for _, v := range a {
			if math.IsNaN(float64(v)) || (c.FinalSoftcap > 0 && math.Abs(float64(v)) > float64(c.FinalSoftcap)) {
				t.Fatalf("%s: logit %v out of range", c.Family, v)
			}
		}
	}
}

// TestPerplexityMethod recomputes llama.cpp's perplexity directly from
// full-chunk logits.
func TestPerplexityMethod(t *testing.T) {
	c := synthConfig()
	md := mustLoad(t, synthModel(t, c, synthValues(c, 10), ir.BF16), Options{})
	const ctx = 16
	toks := randomTokens(3*ctx+5, c.Vocab, 11)
	for _, chunks := range []int{0, 2} {
		r, err := Perplexity(md, toks, ctx, chunks, md.DefaultPerplexityOptions())
		if err != nil {
			t.Fatal(err)
		}
		n := 3
		if chunks > 0 {
			n = chunks
		}
		var sum, sum2 float64
		count := 0
		for k := 0; k < n; k++ {
			chunk := append([]int32(nil), toks[k*ctx:(k+1)*ctx]...)
			chunk[0] = 2 // BOS
			l := mustLogits(t, md, chunk)
			for j := ctx / 2; j < ctx-1; j++ {
				row := l[j*c.Vocab : (j+1)*c.Vocab]
				var s float64
				for _, v := range row {
					s += math.Exp(float64(v))
				}
				nll := math.Log(s) - float64(row[chunk[j+1]])
				sum += nll
				sum2 += nll * nll
				count++
			}
		}
		mean := sum / float64(count)
		if r.Count != count || r.Chunks != n || math.Abs(r.NLLMean-mean) > 1e-12*mean {
			t.Errorf("chunks=%d: got %+v, want count %d, nll %v", chunks, r, count, mean)
		}
		sd := math.Sqrt((sum2/float64(count) - mean*mean) / float64(count-1))
		if math.Abs(r.PPL-math.Exp(mean)) > 1e-9*r.PPL || math.Abs(r.NLLStderr-sd) > 1e-9*sd || math.Abs(r.PPLError-r.PPL*sd) > 1e-9*r.PPLError {
			t.Errorf("chunks=%d: ppl %v ± %v (nll stderr %v), want %v ± %v", chunks, r.PPL, r.PPLError, r.NLLStderr, math.Exp(mean), math.Exp(mean)*sd)
		}
	}
	if _, err := Perplexity(md, toks[:2*ctx-1], ctx, 0, PerplexityOptions{BOS: 2}); err == nil {
		t.Error("perplexity on fewer than 2·ctx tokens did not fail")
	}
}

// TestKLDivergence checks a model against itself (exactly zero divergence,
// identical top tokens) and against a quantized copy (small, positive).
func TestKLDivergence(t *testing.T) {
	c := synthConfig()
	vals := synthValues(c, 12)
	base := mustLoad(t, synthModel(t, c, vals, ir.BF16), Options{})
	const ctx = 16
	toks := randomTokens(8*ctx, c.Vocab, 13)
	opts := base.DefaultPerplexityOptions()
	self, err := KLDivergence(base, base, toks, ctx, 0, opts)
	if err != nil {
		t.Fatal(err)
	}
	if self.KLDMean != 0 || self.KLDMax != 0 || self.SameTop != 1 || self.DeltaPRMS != 0 || self.PPLRatio != 1 || self.Count != 8*(ctx-1-ctx/2) {
		t.Errorf("model against itself: %+v", self)
	}
	ppl, err := Perplexity(base, toks, ctx, 0, opts)
	if err != nil {
		t.Fatal(err)
	}
	if self.PPL != ppl.PPL || self.BasePPL != ppl.PPL {
		t.Errorf("KLD's perplexities %v / %v, Perplexity %v", self.PPL, self.BasePPL, ppl.PPL)
	}
	if k, ok := quantize.Lookup(ir.Q4_0); ok && k.Quantize != nil {
		q := mustLoad(t, synthModel(t, c, vals, ir.Q4_0), Options{})
		r, err := KLDivergence(q, base, toks, ctx, 0, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Q4_0 vs BF16: KLD %.3g ± %.2g, median %.3g, p99 %.3g, max %.3g, same top %.3f, RMS Δp %.3g, PPL ratio %.4f ± %.4f",
			r.KLDMean, r.KLDMeanError, r.KLDMedian, r.KLD99, r.KLDMax, r.SameTop, r.DeltaPRMS, r.PPLRatio, r.PPLRatioError)
		if !(r.KLDMean > 0 && r.KLDMean < 1) || r.KLDMax < r.KLD99 || r.KLD99 < r.KLDMedian || r.SameTop <= 0.5 || r.SameTop > 1 {
			t.Errorf("Q4_0 against BF16: implausible %+v", r)
		}
		if got := math.Exp(r.LogPPLRatio); math.Abs(got-r.PPL/r.BasePPL) > 1e-9 {
			t.Errorf("PPL ratio %v, PPL/base %v", got, r.PPL/r.BasePPL)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4}
	for _, c := range []struct{ f, want float64 }{{0, 1}, {1, 4}, {0.5, 2.5}, {0.99, 3.97}, {-1, 1}, {2, 4}} {
		if got := Percentile(v, c.f); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Percentile(%v) = %v, want %v", c.f, got, c.want)
		}
	}
	if median(v) != 2.5 || median(v[:3]) != 2 {
		t.Error("median")
	}
}

// TestErrors checks that bad input is an error, not a panic.
func TestErrors(t *testing.T) {
	c := synthConfig()
	vals := synthValues(c, 14)
	im := synthModel(t, c, vals, ir.F32)
	md := mustLoad(t, im, Options{})
	if _, err := md.Logits([]int32{1, int32(c.Vocab)}); err == nil || !strings.Contains(err.Error(), "vocabulary") {
		t.Errorf("out-of-vocabulary token: %v", err)
	}
	if _, err := md.Logits([]int32{-1}); err == nil {
		t.Error("negative token accepted")
	}
	st := md.NewState(4)
	if _, err := st.Forward(randomTokens(5, c.Vocab, 1)); err == nil {
		t.Error("overfull state accepted")
	}
	if _, err := st.ForwardLast(nil); err == nil {
		t.Error("ForwardLast of nothing accepted")
	}

	missing := im.Derive()
	missing.Tensors = missing.Tensors[1:]
	if _, err := Load(missing, Options{}); err == nil || !strings.Contains(err.Error(), "token_embd") {
		t.Errorf("missing tensor: %v", err)
	}
	odd := im.Derive()
	odd.Tensors[1] = &ir.Tensor{Name: odd.Tensors[1].Name, DType: ir.I8, Shape: odd.Tensors[1].Shape, Source: odd.Tensors[1].Source}
	if _, err := Load(odd, Options{}); err == nil {
		t.Errorf("I8 weight accepted")
	}
	// A source that is shorter than the tensor: the error names it.
	short := im.Derive()
	for i, tn := range short.Tensors {
		if tn.Name == "blk.1.ffn_up.weight" {
			short.Tensors[i] = &ir.Tensor{Name: tn.Name, DType: tn.DType, Shape: tn.Shape, Source: bytes.NewReader(make([]byte, 100))}
		}
	}
	smd := mustLoad(t, short, Options{Cache: CacheNone})
	if _, err := smd.Logits([]int32{2, 5}); err == nil || !strings.Contains(err.Error(), "blk.1.ffn_up.weight") {
		t.Errorf("truncated tensor: %v", err)
	}
	if _, err := Load(short, Options{Cache: CacheAll}); err == nil {
		t.Error("truncated tensor cached without error")
	}
	base := mustLoad(t, synthModel(t, func() ir.Config { c2 := c; c2.Vocab = 300; return c2 }(), synthValues(func() ir.Config { c2 := c; c2.Vocab = 300; return c2 }(), 1), ir.F32), Options{})
	if _, err := KLDivergence(md, base, randomTokens(64, c.Vocab, 1), 16, 0, PerplexityOptions{BOS: 2}); err == nil {
		t.Error("KLD across vocabularies accepted")
	}
}

// TestMatrixMul checks Mul against a direct float64 product and Row.
func TestMatrixMul(t *testing.T) {
	c := synthConfig()
	vals := synthValues(c, 15)
	im := synthModel(t, c, vals, ir.F32)
	tn := im.Tensor("blk.0.ffn_down.weight")
	m, err := NewMatrix(tn)
	if err != nil {
		t.Fatal(err)
	}
	w := vals[tn.Name]
	x := make([]float32, 5*m.Cols)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	out := make([]float32, 5*m.Rows)
	if err := m.Mul(x, 5, out, 3); err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 5; b++ {
		for r := 0; r < m.Rows; r++ {
			var s float64
			for k := 0; k < m.Cols; k++ {
				s += float64(w[r*m.Cols+k]) * float64(x[b*m.Cols+k])
			}
			if d := math.Abs(float64(out[b*m.Rows+r]) - s); d > 1e-6*(1+math.Abs(s)) {
				t.Fatalf("out[%d][%d] = %v, want %v", b, r, out[b*m.Rows+r], s)
			}
		}
	}
	row := make([]float32, m.Cols)
	if err := m.Row(3, row); err != nil || sameBits(row, w[3*m.Cols:4*m.Cols]) >= 0 {
		t.Errorf("Row: %v", err)
	}
	if err := m.Row(m.Rows, row); err == nil {
		t.Error("row out of range accepted")
	}
	if err := m.Mul(x, 6, out, 1); err == nil {
		t.Error("short input accepted")
	}
}

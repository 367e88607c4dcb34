package runtime

import (
	"fmt"
	"math"
	"slices"
)

// PerplexityOptions configures Perplexity and KLDivergence.
type PerplexityOptions struct {
	// BOS is the token that replaces the first token of every chunk, as
	// llama.cpp does for vocabularies that add BOS (all Gemma ones).
	// Negative keeps each chunk's own first token. Use the tokenizer's
	// BOS id (ir.Tokenizer.BOS); DefaultPerplexityOptions sets it from the
	// model.
	BOS int32
	// Progress, when not nil, is called after each chunk with the number
	// of chunks done and the total.
	Progress func(done, total int)
}

// PerplexityResult is a perplexity measurement with llama.cpp's method
// (llama-perplexity without --kl-divergence).
type PerplexityResult struct {
	// Ctx is the chunk length and Chunks the number of chunks evaluated.
	Ctx, Chunks int
	// Count is the number of scored predictions: Chunks × (Ctx − 1 − Ctx/2).
	Count int
	// NLLMean is the mean negative log-likelihood (natural log) of the
	// scored tokens, summed in float64 in corpus order.
	NLLMean float64
	// NLLStderr is llama.cpp's uncertainty of NLLMean:
	// sqrt((mean(nll²) − NLLMean²) / (Count − 1)), 0 when not positive.
	NLLStderr float64
	// PPL is exp(NLLMean).
	PPL float64
	// PPLError is the "±" llama.cpp prints after the final estimate:
	// PPL × NLLStderr.
	PPLError float64
}

// chunkPlan is the chunking shared by Perplexity and KLDivergence.
type chunkPlan struct {
	ctx, chunks, first int
}

// plan checks the corpus and chunking as llama.cpp's perplexity does:
// at least 2·ctx tokens, n_chunk = min(chunks, len/ctx) (all when chunks
// <= 0), and the scored window starting at first = ctx/2.
func plan(tokens []int32, ctx, chunks int) (chunkPlan, error) {
	if ctx < 4 {
		return chunkPlan{}, fmt.Errorf("perplexity: context %d is too short (need at least 4)", ctx)
	}
	if len(tokens) < 2*ctx {
		return chunkPlan{}, fmt.Errorf("perplexity: %d tokens; need at least %d for a context of %d", len(tokens), 2*ctx, ctx)
	}
	n := len(tokens) / ctx
	if chunks > 0 {
		n = min(n, chunks)
	}
	return chunkPlan{ctx: ctx, chunks: n, first: ctx / 2}, nil
}

// DefaultPerplexityOptions returns options with BOS taken from the model's
// tokenizer (-1 when it has none or does not add BOS).
func (md *Model) DefaultPerplexityOptions() PerplexityOptions {
	return PerplexityOptions{BOS: md.bos}
}

// chunkLogits evaluates chunk k in the (reset) state st and returns the
// logits of positions first .. ctx-2 (the ones that predict a token inside
// the chunk), (ctx-1-first) rows of Vocab. The last token is not run: with
// causal attention it cannot change earlier positions' logits.
func chunkLogits(st *State, tokens []int32, p chunkPlan, k int, bos int32, out []float32) error {
	chunk := slices.Clone(tokens[k*p.ctx : (k+1)*p.ctx])
	if bos >= 0 {
		chunk[0] = bos
	}
	st.Reset()
	return st.forward(chunk[:p.ctx-1], p.first, out)
}

// lse returns the index of the first largest logit and the log-sum-exp
// max + log Σ exp(l − max), in float64.
func lse(logits []float32) (int, float64) {
	mx, arg := logits[0], 0
	for i, v := range logits {
		if v > mx {
			mx, arg = v, i
		}
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - float64(mx))
	}
	return arg, float64(mx) + math.Log(sum)
}

// nllOf returns −log p(tok) for one row of logits, in float64.
func nllOf(logits []float32, tok int32) float64 {
	_, l := lse(logits)
	return l - float64(logits[tok])
}

// meanAndUncertainty is llama.cpp's mean_and_uncertainty: the mean and
// sqrt((sum2/n − mean²)/(n − 1)), the latter 0 unless positive and n > 10.
func meanAndUncertainty(sum, sum2 float64, n int) (float64, float64) {
	if n < 1 {
		return 0, 0
	}
	f := sum / float64(n)
	df := sum2/float64(n) - f*f
	if df > 0 && n > 10 {
		return f, math.Sqrt(df / float64(n-1))
	}
	return f, 0
}

// Perplexity computes the perplexity of tokens under md with llama.cpp's
// method (tools/perplexity/perplexity.cpp, perplexity()): the caller
// tokenizes the whole text with BOS prepended; chunk k is
// tokens[k·ctx : (k+1)·ctx] with its first token replaced by opts.BOS; each
// chunk runs from an empty cache, and the logits at positions
// ctx/2 .. ctx−2 score the following token. chunks <= 0 evaluates every
// whole chunk. Log-softmax and all sums are float64 (llama.cpp sums
// float32 expf terms in double; the difference is far below 1e-6 relative).
func Perplexity(md *Model, tokens []int32, ctx, chunks int, opts PerplexityOptions) (PerplexityResult, error) {
	p, err := plan(tokens, ctx, chunks)
	if err != nil {
		return PerplexityResult{}, err
	}
	V := md.Config.Vocab
	rows := p.ctx - 1 - p.first
	logits := make([]float32, rows*V)
	nll := make([]float64, rows)
	st := md.NewState(p.ctx)
	var sum, sum2 float64
	for k := 0; k < p.chunks; k++ {
		if err := chunkLogits(st, tokens, p, k, opts.BOS, logits); err != nil {
			return PerplexityResult{}, fmt.Errorf("perplexity: chunk %d: %w", k, err)
		}
		base := k*p.ctx + p.first
		parallelFor(rows, min(md.workers, split(int64(rows*V)*16)), func(i int) {
			nll[i] = nllOf(logits[i*V:(i+1)*V], tokens[base+i+1])
		})
		for _, v := range nll {
			sum += v
			sum2 += v * v
		}
		if opts.Progress != nil {
			opts.Progress(k+1, p.chunks)
		}
	}
	r := PerplexityResult{Ctx: p.ctx, Chunks: p.chunks, Count: p.chunks * rows}
	r.NLLMean = sum / float64(r.Count)
	r.PPL = math.Exp(r.NLLMean)
	if v := sum2/float64(r.Count) - r.NLLMean*r.NLLMean; v > 0 && r.Count > 1 {
		r.NLLStderr = math.Sqrt(v / float64(r.Count-1))
	}
	r.PPLError = r.PPL * r.NLLStderr
	return r, nil
}

// KLDResult holds the statistics llama-perplexity --kl-divergence prints,
// for a model Q against a base model on the same chunks. Per scored token:
// nll and nll_base are −log p(token) under Q and base; KLD is
// Σ_i p_base(i)·(log p_base(i) − log p_Q(i)) over the whole vocabulary;
// Δp = p_Q(token) − p_base(token). Unlike llama.cpp, which reads the base
// log-probabilities back from a file quantized to 16 bits and skips terms
// with log p_base <= −16, everything here is exact float64, so a model
// against itself gives exactly KLD 0 and Δp 0.
//
// Each "Error" field is the one-standard-error uncertainty llama.cpp prints
// after "±" (mean_and_uncertainty: sqrt((mean(x²) − mean(x)²)/(n − 1)),
// 0 for n <= 10).
type KLDResult struct {
	// Ctx is the chunk length, Chunks the number of chunks, Count the
	// number of scored tokens.
	Ctx, Chunks, Count int

	// PPL and PPLError: perplexity of Q (Mean PPL(Q)).
	PPL, PPLError float64
	// BasePPL and BasePPLError: perplexity of the base model (Mean PPL(base)).
	BasePPL, BasePPLError float64
	// LogPPLCorrelation is Cor(ln(PPL(Q)), ln(PPL(base))): the covariance
	// of the two mean nlls divided by the product of their uncertainties.
	LogPPLCorrelation float64
	// LogPPLRatio and LogPPLRatioError: mean ln(PPL(Q)/PPL(base)) = mean
	// nll − mean nll_base, its uncertainty accounting for the covariance.
	LogPPLRatio, LogPPLRatioError float64
	// PPLRatio and PPLRatioError: PPL(Q)/PPL(base) = exp(LogPPLRatio),
	// uncertainty PPLRatio × LogPPLRatioError.
	PPLRatio, PPLRatioError float64
	// PPLDiff and PPLDiffError: PPL(Q) − PPL(base) and its uncertainty.
	PPLDiff, PPLDiffError float64

	// KLDMean and KLDMeanError: mean KL divergence (Mean KLD).
	KLDMean, KLDMeanError float64
	// KLDMedian is the median KLD (the mean of the two middle values for
	// an even count); KLD99 the 99th percentile interpolated as llama.cpp
	// does (see Percentile); KLDMax the largest.
	KLDMedian, KLD99, KLDMax float64
	// KLDValues are the per-token KLDs, sorted ascending, for other
	// percentiles (see Percentile).
	KLDValues []float64

	// DeltaPMean and DeltaPMeanError: mean Δp (Mean Δp).
	DeltaPMean, DeltaPMeanError float64
	// DeltaPRMS and DeltaPRMSError: sqrt(mean Δp²) (RMS Δp), uncertainty
	// 0.5/RMS × the uncertainty of mean Δp².
	DeltaPRMS, DeltaPRMSError float64
	// DeltaPMaxAbs is the largest |Δp|.
	DeltaPMaxAbs float64
	// DeltaPValues are the per-token Δp, sorted ascending.
	DeltaPValues []float64

	// SameTop is the fraction of scored positions where Q's and the base's
	// most likely tokens agree (Same top p), SameTopError
	// sqrt(SameTop(1−SameTop)/(Count−1)).
	SameTop, SameTopError float64
}

// Percentile returns llama.cpp's percentile of ascending values: linear
// interpolation at fraction·(len−1); the first value for fraction <= 0 and
// the last for fraction >= 1.
func Percentile(sorted []float64, fraction float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	if fraction <= 0 {
		return sorted[0]
	}
	if fraction >= 1 {
		return sorted[len(sorted)-1]
	}
	p := fraction * float64(len(sorted)-1)
	i := int(p)
	p -= float64(i)
	return (1-p)*sorted[i] + p*sorted[min(i+1, len(sorted)-1)]
}

// median returns the middle of ascending values (mean of the two middle
// ones for an even count).
func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 0 {
		return 0.5 * (sorted[n/2] + sorted[n/2-1])
	}
	return sorted[n/2]
}

// kldToken is one scored position's figures.
type kldToken struct {
	nll, nllBase, kld, dp float64
	sameTop               bool
}

// KLDivergence compares md (Q) with base on the chunks Perplexity would
// score, running both models on each chunk in turn so that no base logits
// are stored. Both models must share the vocabulary; opts.BOS applies to
// both. See KLDResult for the statistics.
func KLDivergence(md, base *Model, tokens []int32, ctx, chunks int, opts PerplexityOptions) (KLDResult, error) {
	if md.Config.Vocab != base.Config.Vocab {
		return KLDResult{}, fmt.Errorf("kl-divergence: vocabularies differ (%d and %d tokens)", md.Config.Vocab, base.Config.Vocab)
	}
	p, err := plan(tokens, ctx, chunks)
	if err != nil {
		return KLDResult{}, err
	}
	V := md.Config.Vocab
	rows := p.ctx - 1 - p.first
	lq := make([]float32, rows*V)
	lb := make([]float32, rows*V)
	stQ, stB := md.NewState(p.ctx), base.NewState(p.ctx)
	per := make([]kldToken, rows)
	workers := max(md.workers, base.workers)
	var all []kldToken
	for k := 0; k < p.chunks; k++ {
		if err := chunkLogits(stB, tokens, p, k, opts.BOS, lb); err != nil {
			return KLDResult{}, fmt.Errorf("kl-divergence: base model, chunk %d: %w", k, err)
		}
		if err := chunkLogits(stQ, tokens, p, k, opts.BOS, lq); err != nil {
			return KLDResult{}, fmt.Errorf("kl-divergence: chunk %d: %w", k, err)
		}
		off := k*p.ctx + p.first
		parallelFor(rows, min(workers, split(int64(rows*V)*48)), func(i int) {
			per[i] = kldOne(lq[i*V:(i+1)*V], lb[i*V:(i+1)*V], tokens[off+i+1])
		})
		all = append(all, per...)
		if opts.Progress != nil {
			opts.Progress(k+1, p.chunks)
		}
	}
	return kldStats(all, p), nil
}

// kldOne scores one position from Q's and the base's log-softmax,
// computed in float64.
func kldOne(q, b []float32, tok int32) kldToken {
	aq, lq := lse(q)
	ab, lb := lse(b)
	var kld float64
	for i, v := range b {
		pb := float64(v) - lb
		kld += math.Exp(pb) * (pb - (float64(q[i]) - lq))
	}
	t := kldToken{nll: lq - float64(q[tok]), nllBase: lb - float64(b[tok]), kld: kld, sameTop: aq == ab}
	t.dp = math.Exp(-t.nll) - math.Exp(-t.nllBase)
	return t
}

// kldStats reduces the per-token figures in corpus order as llama.cpp's
// kl_divergence does.
func kldStats(all []kldToken, p chunkPlan) KLDResult {
	r := KLDResult{Ctx: p.ctx, Chunks: p.chunks, Count: len(all)}
	var sNLL, sNLL2, sB, sB2, sNB, sK, sK2, sD, sD2, sD4 float64
	same := 0
	r.KLDValues = make([]float64, len(all))
	r.DeltaPValues = make([]float64, len(all))
	for i, t := range all {
		sNLL += t.nll
		sNLL2 += t.nll * t.nll
		sB += t.nllBase
		sB2 += t.nllBase * t.nllBase
		sNB += t.nll * t.nllBase
		sK += t.kld
		sK2 += t.kld * t.kld
		sD += t.dp
		d2 := t.dp * t.dp
		sD2 += d2
		sD4 += d2 * d2
		r.DeltaPMaxAbs = max(r.DeltaPMaxAbs, math.Abs(t.dp))
		if t.sameTop {
			same++
		}
		r.KLDValues[i] = t.kld
		r.DeltaPValues[i] = t.dp
	}
	n := len(all)
	cov := 0.0
	if n >= 10 {
		cov = (sNB/float64(n) - (sNLL/float64(n))*(sB/float64(n))) / float64(n-1)
	}
	lq, lqe := meanAndUncertainty(sNLL, sNLL2, n)
	lb, lbe := meanAndUncertainty(sB, sB2, n)
	r.PPL, r.BasePPL = math.Exp(lq), math.Exp(lb)
	r.PPLError, r.BasePPLError = r.PPL*lqe, r.BasePPL*lbe
	if lqe > 0 && lbe > 0 {
		r.LogPPLCorrelation = cov / (lqe * lbe)
	}
	r.LogPPLRatio = lq - lb
	r.LogPPLRatioError = math.Sqrt(math.Max(0, lqe*lqe+lbe*lbe-2*cov))
	r.PPLRatio = math.Exp(r.LogPPLRatio)
	r.PPLRatioError = r.PPLRatio * r.LogPPLRatioError
	r.PPLDiff = r.PPL - r.BasePPL
	r.PPLDiffError = math.Sqrt(math.Max(0, r.PPLError*r.PPLError+r.BasePPLError*r.BasePPLError-2*r.PPL*r.BasePPL*cov))
	r.KLDMean, r.KLDMeanError = meanAndUncertainty(sK, sK2, n)
	r.DeltaPMean, r.DeltaPMeanError = meanAndUncertainty(sD, sD2, n)
	mse, mseErr := meanAndUncertainty(sD2, sD4, n)
	r.DeltaPRMS = math.Sqrt(mse)
	if r.DeltaPRMS > 0 {
		r.DeltaPRMSError = 0.5 / r.DeltaPRMS * mseErr
	}
	if n > 0 {
		r.SameTop = float64(same) / float64(n)
	}
	if n > 1 {
		r.SameTopError = math.Sqrt(r.SameTop * (1 - r.SameTop) / float64(n-1))
	}
	slices.Sort(r.KLDValues)
	slices.Sort(r.DeltaPValues)
	r.KLDMedian = median(r.KLDValues)
	r.KLD99 = Percentile(r.KLDValues, 0.99)
	if n > 0 {
		r.KLDMax = r.KLDValues[n-1]
	}
	return r
}

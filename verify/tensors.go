package verify

import (
	"fmt"
	"math"
	goruntime "runtime"
	"sync"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// chunkValues bounds the float32 values decoded per side and step, so
// comparing a tensor needs a few MiB whatever its size.
const chunkValues = 1 << 20

// QuantFloor is the acceptance floor of a quantized tensor type: the
// artifact's dequantized tensor must have at least MinCosine cosine
// similarity with the source tensor and at most MaxRelRMSE relative RMS
// error (RMSE divided by the source tensor's RMS). Cosine alone misses a
// wrong scale (a tensor times 2 has cosine 1); the RMSE bound catches it.
type QuantFloor struct {
	MinCosine  float64 `json:"min_cosine"`
	MaxRelRMSE float64 `json:"max_rel_rmse"`
}

// QuantFloors are the floors per quantized type, by roughly the bits per
// weight a type spends. The RMSE bounds sit about 2.5 times above what
// each type reaches on Gaussian weights and above its worst figure on
// ggml's heavy-tailed and outlier test rows, with and without an
// importance matrix (docs/verify.md lists the figures); each cosine floor is sqrt(1 − r²) for the RMSE bound
// r, rounded down: the least cosine a tensor within r of the source can
// have. They catch broken artifacts (wrong block layout, scales or row
// order, a transposed or swapped tensor, corrupted bytes) rather than
// grade quantization quality, which the KLD check measures. Ternary types
// (TQ1_0, TQ2_0) and IQ1 only suit models trained for them, so their
// floors only catch garbage.
var QuantFloors = map[ir.DType]QuantFloor{
	ir.Q8_0: {0.9995, 0.03}, ir.Q8_1: {0.9995, 0.03}, ir.Q8_K: {0.9995, 0.03},
	ir.Q6_K: {0.9967, 0.08},
	ir.Q5_0: {0.9886, 0.15}, ir.Q5_1: {0.9886, 0.15}, ir.Q5_K: {0.9886, 0.15},
	ir.Q4_0: {0.968, 0.25}, ir.Q4_1: {0.968, 0.25}, ir.Q4_K: {0.968, 0.25}, ir.IQ4_NL: {0.968, 0.25}, ir.IQ4_XS: {0.968, 0.25},
	ir.MXFP4: {0.953, 0.30},
	ir.Q3_K:  {0.916, 0.40}, ir.IQ3_XXS: {0.916, 0.40}, ir.IQ3_S: {0.916, 0.40},
	ir.Q2_K: {0.8, 0.60}, ir.IQ2_XXS: {0.714, 0.70}, ir.IQ2_XS: {0.714, 0.70}, ir.IQ2_S: {0.714, 0.70},
	ir.IQ1_S: {0.312, 0.95}, ir.IQ1_M: {0.312, 0.95}, ir.TQ1_0: {0.312, 0.95}, ir.TQ2_0: {0.312, 0.95},
}

// floatFormat describes a plain float type's rounding: p significant bits
// and emin, the exponent of the smallest normal number (2^emin). F64
// tensors are compared after widening to float32 (as every consumer reads
// them), so they get float32's figures.
func floatFormat(t ir.DType) (p, emin int, ok bool) {
	switch t {
	case ir.F32, ir.F64:
		return 24, -126, true
	case ir.F16:
		return 11, -14, true
	case ir.BF16:
		return 8, -126, true
	}
	return 0, 0, false
}

// roundingBound is the largest |a − t| a correctly rounded (to nearest)
// value a of the type can have for the exact value t: half an ulp of t's
// binade, the subnormal spacing at the bottom, and below the smallest
// normal number also a flush to zero. reoffset adds one float32 rounding
// (2^-24·|t|) for norm weights whose offset changed, since converters add
// the offset in float32 before rounding to the type.
func roundingBound(t float64, p, emin int, reoffset bool) float64 {
	at := math.Abs(t)
	_, exp := math.Frexp(at) // at = f·2^exp, f in [0.5, 1)
	e := max(exp-1, emin)    // the binade's exponent, subnormals at emin
	b := math.Ldexp(1, e-p)  // half an ulp: 2^(e−(p−1)) / 2
	if at < math.Ldexp(1, emin) {
		b = math.Max(b, at) // flush to zero
	}
	if reoffset {
		b += 0x1p-24 * at
	}
	return b
}

// TensorOptions configures CompareTensors.
type TensorOptions struct {
	// Workers compare tensors in parallel; 0 means GOMAXPROCS. Results do
	// not depend on it.
	Workers int
	// MinCosine, when positive, replaces every quantized type's cosine
	// floor from QuantFloors; MaxRelRMSE likewise for the RMSE bound.
	MinCosine  float64
	MaxRelRMSE float64
	// Progress, when set, is called (from one goroutine at a time) with the
	// artifact bytes compared so far and the total.
	Progress func(done, total int64)
}

// TensorResult is one tensor's comparison. Values are compared as
// effective weights: for norm weights NormOffset+w of each model, so an
// artifact storing 1+w (GGUF) matches a source storing w (Hugging Face).
type TensorResult struct {
	Name       string  `json:"name"`
	Type       string  `json:"type"`
	SourceType string  `json:"source_type"`
	Shape      []int64 `json:"shape"`
	Elements   int64   `json:"elements"`
	// Norm: compared as effective weights NormOffset + w.
	Norm bool `json:"norm,omitempty"`
	// Rule is "rounding" (a plain float type: every element within the
	// type's rounding of the source value), "floor" (a quantized type:
	// cosine and relative RMSE against QuantFloors) or "undecodable" (no
	// dequantizer for one side's type: the tensor fails, unverified).
	Rule string `json:"rule"`
	// RMSE is sqrt(mean (a−s)²); MaxAbs max |a−s| at flat element index
	// MaxAbsIndex; RefRMS sqrt(mean s²) of the source; RelRMSE RMSE/RefRMS
	// (0 when both are 0); Cosine Σas/sqrt(Σa²·Σs²) (1 when both are zero
	// tensors).
	RMSE        Num   `json:"rmse"`
	MaxAbs      Num   `json:"max_abs"`
	MaxAbsIndex int64 `json:"max_abs_index"`
	RefRMS      Num   `json:"ref_rms"`
	RelRMSE     Num   `json:"rel_rmse"`
	Cosine      Num   `json:"cosine"`
	// Rounding rule only. MaxBoundRatio is the largest |a−t| divided by
	// the allowed rounding error of element t (≤ 1 passes); Violations the
	// number of elements above their bound, the first at flat index
	// FirstViolation (−1 when none).
	MaxBoundRatio  Num   `json:"max_bound_ratio,omitempty"`
	Violations     int64 `json:"violations,omitempty"`
	FirstViolation int64 `json:"first_violation"`
	// Floor rule only: the floors applied.
	MinCosine  Num `json:"min_cosine,omitempty"`
	MaxRelRMSE Num `json:"max_rel_rmse,omitempty"`
	// NonFinite counts elements where artifact or source is NaN or
	// infinite and the other differs (a failure; FirstViolation is the
	// first); SourceNonFinite those where both hold the same non-finite
	// value (left out of the statistics).
	NonFinite       int64 `json:"non_finite,omitempty"`
	SourceNonFinite int64 `json:"source_non_finite,omitempty"`
	Passed          bool  `json:"passed"`
	// Reason says why the tensor failed ("" when it passed).
	Reason string `json:"reason,omitempty"`

	// sse is the sum of squared differences behind RMSE, kept exact for
	// totals over many tensors (CompareQuantized).
	sse float64
}

// pair is one tensor present with the same shape in both models.
type pair struct {
	a, s       *ir.Tensor
	aOff, sOff float64
	norm       bool
}

// CompareTensors compares every tensor that artifact and source both hold
// with the same shape, streaming both in row chunks (ir.Tensor.ReadRows +
// quantize.DecodeRows), and returns the results in the artifact's tensor
// order. Tensors missing on either side or differing in shape are for
// CheckTensorSet to report.
func CompareTensors(artifact, source *ir.Model, opts TensorOptions) ([]TensorResult, error) {
	var pairs []pair
	var total int64
	for _, a := range artifact.Tensors {
		s := source.Tensor(a.Name)
		if s == nil || !sameShape(a.Shape, s.Shape) {
			continue
		}
		p := pair{a: a, s: s}
		if ir.IsNormWeight(a.Name) {
			p.norm = true
			p.aOff, p.sOff = float64(artifact.Config.NormOffset), float64(source.Config.NormOffset)
		}
		pairs = append(pairs, p)
		total += a.Size()
	}
	results := make([]TensorResult, len(pairs))
	errs := make([]error, len(pairs))
	workers := opts.Workers
	if workers <= 0 {
		workers = goruntime.GOMAXPROCS(0)
	}
	workers = min(workers, max(len(pairs), 1))
	var (
		mu   sync.Mutex
		done int64
		next = make(chan int)
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i], errs[i] = compareTensor(pairs[i], opts)
				mu.Lock()
				done += pairs[i].a.Size()
				if opts.Progress != nil {
					opts.Progress(done, total)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range pairs {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return results, nil
}

func sameShape(a, b []int64) bool {
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

// compareTensor streams one tensor pair and reduces it to a TensorResult.
func compareTensor(p pair, opts TensorOptions) (TensorResult, error) {
	a, s := p.a, p.s
	r := TensorResult{Name: a.Name, Type: a.DType.String(), SourceType: s.DType.String(),
		Shape: append([]int64(nil), a.Shape...), Elements: a.NumElements(), Norm: p.norm,
		FirstViolation: -1}
	prec, emin, isFloat := floatFormat(a.DType)
	var floor QuantFloor
	if isFloat {
		r.Rule = "rounding"
	} else {
		r.Rule = "floor"
		f, ok := QuantFloors[a.DType]
		if !ok {
			f = QuantFloor{MinCosine: 0.312, MaxRelRMSE: 0.95}
		}
		if opts.MinCosine > 0 {
			f.MinCosine = opts.MinCosine
		}
		if opts.MaxRelRMSE > 0 {
			f.MaxRelRMSE = opts.MaxRelRMSE
		}
		floor = f
		r.MinCosine, r.MaxRelRMSE = Num(f.MinCosine), Num(f.MaxRelRMSE)
	}
	for _, x := range []*ir.Tensor{a, s} {
		if err := quantize.DecodeRows(x.DType, nil, nil); err != nil {
			r.Rule, r.MinCosine, r.MaxRelRMSE = "undecodable", 0, 0
			r.Cosine, r.RMSE, r.MaxAbs, r.RelRMSE, r.RefRMS = Num(math.NaN()), Num(math.NaN()), Num(math.NaN()), Num(math.NaN()), Num(math.NaN())
			r.Reason = fmt.Sprintf("cannot compare: %v", err)
			return r, nil
		}
	}
	cols := a.Cols()
	rows := a.Rows()
	step := max(int64(1), chunkValues/cols)
	rawA := make([]byte, min(step, rows)*a.RowBytes())
	rawS := make([]byte, min(step, rows)*s.RowBytes())
	fa := make([]float32, min(step, rows)*cols)
	fs := make([]float32, len(fa))
	// delta is what the source's stored value must change by to be the
	// artifact's stored target t = s + sOff − aOff.
	delta := p.sOff - p.aOff
	var d2, s2, a2, as, maxAbs, maxRatio float64
	maxAbsIdx := int64(0)
	for r0 := int64(0); r0 < rows; r0 += step {
		n := min(step, rows-r0)
		ba, bs := rawA[:n*a.RowBytes()], rawS[:n*s.RowBytes()]
		if err := a.ReadRows(r0, n, ba); err != nil {
			return r, fmt.Errorf("verify: artifact %w", err)
		}
		if err := s.ReadRows(r0, n, bs); err != nil {
			return r, fmt.Errorf("verify: source %w", err)
		}
		va, vs := fa[:n*cols], fs[:n*cols]
		if err := quantize.DecodeRows(a.DType, ba, va); err != nil {
			return r, fmt.Errorf("verify: artifact tensor %s, rows [%d,%d): %w", a.Name, r0, r0+n, err)
		}
		if err := quantize.DecodeRows(s.DType, bs, vs); err != nil {
			return r, fmt.Errorf("verify: source tensor %s, rows [%d,%d): %w", s.Name, r0, r0+n, err)
		}
		base := r0 * cols
		for i := range va {
			x, y := float64(va[i]), float64(vs[i])
			if !finite(x) || !finite(y) {
				if x == y || (math.IsNaN(x) && math.IsNaN(y)) {
					r.SourceNonFinite++
					continue
				}
				r.NonFinite++
				if r.FirstViolation < 0 {
					r.FirstViolation = base + int64(i)
				}
				if !math.IsInf(maxAbs, 1) {
					maxAbs, maxAbsIdx, maxRatio = math.Inf(1), base+int64(i), math.Inf(1)
				}
				continue
			}
			t := y + delta // the artifact's target, in its own convention
			d := x - t
			ae, se := x+p.aOff, y+p.sOff
			d2 += d * d
			s2 += se * se
			a2 += ae * ae
			as += ae * se
			if ad := math.Abs(d); ad > maxAbs {
				maxAbs, maxAbsIdx = ad, base+int64(i)
			}
			if isFloat {
				ratio := math.Abs(d) / roundingBound(t, prec, emin, delta != 0)
				if ratio > maxRatio {
					maxRatio = ratio
				}
				if ratio > 1 {
					r.Violations++
					if r.FirstViolation < 0 {
						r.FirstViolation = base + int64(i)
					}
				}
			}
		}
	}
	a.Release()
	s.Release()
	n := float64(max(r.Elements-r.SourceNonFinite-r.NonFinite, 1))
	r.RMSE = Num(math.Sqrt(d2 / n))
	r.sse = d2
	r.RefRMS = Num(math.Sqrt(s2 / n))
	r.MaxAbs, r.MaxAbsIndex = Num(maxAbs), maxAbsIdx
	switch {
	case s2 > 0:
		r.RelRMSE = Num(math.Sqrt(d2 / s2))
	case d2 > 0:
		r.RelRMSE = Num(math.Inf(1))
	}
	switch {
	case a2 == 0 && s2 == 0:
		r.Cosine = 1
	case a2 == 0 || s2 == 0:
		r.Cosine = 0
	default:
		r.Cosine = Num(as / math.Sqrt(a2*s2))
	}
	if r.NonFinite > 0 {
		r.Cosine = Num(math.NaN())
	}
	r.Passed = true
	switch {
	case r.NonFinite > 0:
		r.Passed = false
		r.Reason = fmt.Sprintf("%d elements are NaN or infinite on one side only, first at %s", r.NonFinite, elemPos(r.FirstViolation, cols))
	case isFloat:
		r.MaxBoundRatio = Num(maxRatio)
		if r.Violations > 0 {
			r.Passed = false
			r.Reason = fmt.Sprintf("%d of %d elements differ from the source by more than %s rounding allows (up to %.3g× the bound; max |Δ| %.3g at %s), first at %s",
				r.Violations, r.Elements, a.DType, maxRatio, maxAbs, elemPos(maxAbsIdx, cols), elemPos(r.FirstViolation, cols))
		}
	default:
		if !(float64(r.Cosine) >= floor.MinCosine) {
			r.Passed = false
			r.Reason = fmt.Sprintf("cosine similarity %.6f is below the %s floor %g", float64(r.Cosine), a.DType, floor.MinCosine)
		} else if !(float64(r.RelRMSE) <= floor.MaxRelRMSE) {
			r.Passed = false
			r.Reason = fmt.Sprintf("relative RMS error %.4g is above the %s limit %g", float64(r.RelRMSE), a.DType, floor.MaxRelRMSE)
		}
	}
	if !r.Passed && p.norm {
		r.Reason += fmt.Sprintf(" (norm weight, compared as effective weights: artifact %g+w against source %g+w)", p.aOff, p.sOff)
	}
	return r, nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// elemPos formats a flat element index as [row, col].
func elemPos(i, cols int64) string {
	if i < 0 {
		return "-"
	}
	return fmt.Sprintf("element [%d, %d]", i/cols, i%cols)
}

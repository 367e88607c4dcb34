package verify

import (
	"fmt"
	"math"

	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// Tolerances are the acceptance limits of the logits checks (golden logits
// and KLD against the source). A zero or negative MaxRel/MaxAbs/MaxKLD or
// MinTop1 disables that limit. DefaultTolerances suit quantized artifacts;
// exact float conversions pass far tighter ones (the fixtures' acceptance
// run uses MaxRel 1e-5 and MaxAbs 1e-3).
type Tolerances struct {
	// MaxRel bounds ‖model−ref‖/‖ref‖ over each prompt's logits.
	MaxRel float64 `json:"max_rel"`
	// MaxAbs bounds max |model−ref| over each prompt's logits.
	MaxAbs float64 `json:"max_abs"`
	// MinTop1 is the least fraction of positions whose most likely token
	// agrees with the reference (per prompt; for --text, the same-top
	// rate over all scored tokens).
	MinTop1 float64 `json:"min_top1"`
	// MaxKLD bounds the mean KL(ref‖model) per token (per prompt; for
	// --text, over all scored tokens).
	MaxKLD float64 `json:"max_kld"`
}

// DefaultTolerances are a gross-breakage gate: every quantization type
// down to Q2_K passes them on the fixture models, and an artifact with
// garbage weights does not. MaxAbs is off by default because logit scales
// differ between models. Tighten them per preset; docs/verify.md lists
// measured figures and suggested limits.
var DefaultTolerances = Tolerances{MaxRel: 1, MaxAbs: 0, MinTop1: 0.3, MaxKLD: 0.5}

// PromptResult is one golden prompt's comparison.
type PromptResult struct {
	Index  int    `json:"index"`
	Text   string `json:"text"`
	Tokens int    `json:"tokens"`
	// Rel is ‖Δ‖/‖ref‖ over all the prompt's logits, MaxAbs max |Δ|
	// (runtime.CompareLogits).
	Rel    Num `json:"rel"`
	MaxAbs Num `json:"max_abs"`
	// Top1 is the fraction of positions whose argmax agrees.
	Top1 Num `json:"top1"`
	// KLDMean and KLDMax are the mean and largest per-position
	// KL(ref‖model) in nats (softmax in float64).
	KLDMean Num  `json:"kld_mean"`
	KLDMax  Num  `json:"kld_max"`
	Passed  bool `json:"passed"`
	// Reason lists the limits exceeded.
	Reason string `json:"reason,omitempty"`
}

// GoldensCheck is the golden-logits check.
type GoldensCheck struct {
	Passed bool   `json:"passed"`
	Dir    string `json:"dir"`
	// Reference is the goldens' "reference" field: who produced them.
	Reference  string         `json:"reference"`
	Tolerances Tolerances     `json:"tolerances"`
	Prompts    []PromptResult `json:"prompts"`
	// Worst figures over all prompts.
	MaxRel  Num `json:"max_rel"`
	MaxAbs  Num `json:"max_abs"`
	MinTop1 Num `json:"min_top1"`
	MaxKLD  Num `json:"max_kld_mean"`
}

// CheckGoldens runs every golden prompt's token ids through m and compares
// the logits of every position with the reference.
func CheckGoldens(m *runtime.Model, g *runtime.Goldens, tol Tolerances) (*GoldensCheck, error) {
	if g.Vocab != 0 && g.Vocab != m.Config.Vocab {
		return nil, fmt.Errorf("verify: the goldens hold %d logits per position, the model's vocabulary is %d", g.Vocab, m.Config.Vocab)
	}
	c := &GoldensCheck{Reference: g.Reference, Tolerances: tol, Passed: true, MinTop1: 1}
	for i, p := range g.Prompts {
		got, err := m.Logits(p.TokenIDs)
		if err != nil {
			return nil, fmt.Errorf("verify: golden prompt %d: %w", i, err)
		}
		r, err := comparePrompt(got, p.Logits, m.Config.Vocab, tol)
		if err != nil {
			return nil, fmt.Errorf("verify: golden prompt %d: %w", i, err)
		}
		r.Index, r.Text, r.Tokens = i, p.Text, len(p.TokenIDs)
		c.Prompts = append(c.Prompts, r)
		c.Passed = c.Passed && r.Passed
		c.MaxRel = maxNum(c.MaxRel, r.Rel)
		c.MaxAbs = maxNum(c.MaxAbs, r.MaxAbs)
		c.MaxKLD = maxNum(c.MaxKLD, r.KLDMean)
		if !(r.Top1 >= c.MinTop1) {
			c.MinTop1 = r.Top1
		}
	}
	return c, nil
}

// maxNum is max that lets NaN win, so a NaN figure is never hidden.
func maxNum(a, b Num) Num {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) {
		return Num(math.NaN())
	}
	return max(a, b)
}

// comparePrompt compares [n, V] logits against the reference.
func comparePrompt(got, want []float32, V int, tol Tolerances) (PromptResult, error) {
	var r PromptResult
	rel, maxAbs, err := runtime.CompareLogits(got, want)
	if err != nil {
		return r, err
	}
	r.Rel, r.MaxAbs = Num(rel), Num(maxAbs)
	n := len(want) / V
	same := 0
	var sum, mx float64
	for i := 0; i < n; i++ {
		g, w := got[i*V:(i+1)*V], want[i*V:(i+1)*V]
		if runtime.Argmax(g) == runtime.Argmax(w) {
			same++
		}
		k := KLD(w, g)
		sum += k
		if k > mx || math.IsNaN(k) {
			mx = k
		}
	}
	if n > 0 {
		r.Top1 = Num(float64(same) / float64(n))
		r.KLDMean = Num(sum / float64(n))
	}
	r.KLDMax = Num(mx)
	r.Reason = tol.exceeded(float64(r.Rel), float64(r.MaxAbs), float64(r.Top1), float64(r.KLDMean))
	r.Passed = r.Reason == ""
	return r, nil
}

// exceeded describes the limits the figures break ("" when none). NaN
// figures break every enabled limit.
func (tol Tolerances) exceeded(rel, maxAbs, top1, kld float64) string {
	var s string
	add := func(format string, args ...any) {
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf(format, args...)
	}
	if tol.MaxRel > 0 && !(rel <= tol.MaxRel) {
		add("relative error %.3g > %g", rel, tol.MaxRel)
	}
	if tol.MaxAbs > 0 && !(maxAbs <= tol.MaxAbs) {
		add("max |Δlogit| %.3g > %g", maxAbs, tol.MaxAbs)
	}
	if tol.MinTop1 > 0 && !(top1 >= tol.MinTop1) {
		add("top-1 agreement %.4f < %g", top1, tol.MinTop1)
	}
	if tol.MaxKLD > 0 && !(kld <= tol.MaxKLD) {
		add("mean KLD %.3g > %g", kld, tol.MaxKLD)
	}
	return s
}

// logSumExp returns max + log Σ exp(v − max) in float64.
func logSumExp(v []float32) float64 {
	mx := math.Inf(-1)
	for _, x := range v {
		mx = math.Max(mx, float64(x))
	}
	var s float64
	for _, x := range v {
		s += math.Exp(float64(x) - mx)
	}
	return mx + math.Log(s)
}

// KLD returns KL(p‖q) in nats for the softmax distributions of logits p
// and q, computed in float64.
func KLD(p, q []float32) float64 {
	lp, lq := logSumExp(p), logSumExp(q)
	var k float64
	for i := range p {
		a := float64(p[i]) - lp
		k += math.Exp(a) * (a - (float64(q[i]) - lq))
	}
	return math.Max(k, 0)
}

// MakeGoldens evaluates each prompt (BOS, when the tokenizer has one,
// followed by its SentencePiece ids) and returns goldens holding every
// position's logits and argmax, ready for runtime.WriteGoldens.
func MakeGoldens(m *runtime.Model, enc *tokenizer.Encoder, prompts []string, name, reference string) (*runtime.Goldens, error) {
	g := &runtime.Goldens{Model: name, Reference: reference, LogitsFile: runtime.DefaultLogitsFile, Vocab: m.Config.Vocab}
	for i, text := range prompts {
		ids := PromptIDs(enc, text)
		if len(ids) == 0 {
			return nil, fmt.Errorf("verify: prompt %d tokenizes to nothing", i)
		}
		logits, err := m.Logits(ids)
		if err != nil {
			return nil, fmt.Errorf("verify: prompt %d: %w", i, err)
		}
		p := runtime.GoldenPrompt{Text: text, TokenIDs: ids, Logits: logits}
		V := m.Config.Vocab
		for j := range ids {
			p.Argmax = append(p.Argmax, int32(runtime.Argmax(logits[j*V:(j+1)*V])))
		}
		g.Prompts = append(g.Prompts, p)
	}
	return g, nil
}

// PromptIDs is the model input for text: the tokenizer's BOS (when it
// has one) followed by the text's SentencePiece ids, as the goldens and
// llama.cpp's perplexity tokenize.
func PromptIDs(enc *tokenizer.Encoder, text string) []int32 {
	var ids []int32
	if bos := enc.Tokenizer().BOS; bos >= 0 {
		ids = append(ids, bos)
	}
	return append(ids, enc.Encode(text)...)
}

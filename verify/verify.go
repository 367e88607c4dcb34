// Package verify checks a converted or quantized Gemma artifact against
// its source and against reference outputs: configuration, tensor set and
// tokenizer identity, per-tensor error statistics streamed in row chunks,
// golden logits, and KL divergence and perplexity on a text through the
// reference runtime. It produces one Report (JSON and a human summary)
// whose Passed field is the release gate; docs/verify.md documents every
// field and threshold.
package verify

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// ReportVersion is the version of the report's JSON layout.
const ReportVersion = 1

// Report is the outcome of a verification. Checks that were not run are
// nil (omitted from the JSON).
type Report struct {
	Version  int        `json:"report_version"`
	Artifact ModelInfo  `json:"artifact"`
	Source   *ModelInfo `json:"source,omitempty"`
	// Passed is true when every check that ran passed.
	Passed bool `json:"passed"`
	// Failures names each failing check and what failed (a tensor, a
	// prompt, a config field), in check order.
	Failures  []Failure       `json:"failures"`
	Config    *ConfigCheck    `json:"config,omitempty"`
	TensorSet *TensorSetCheck `json:"tensor_set,omitempty"`
	Tokenizer *TokenizerCheck `json:"tokenizer,omitempty"`
	// Integrity is the artifact format's own checksum check (a bundle's
	// per-tensor xxhash64); absent for formats that store no checksums.
	Integrity *IntegrityCheck `json:"integrity,omitempty"`
	Weights   *WeightsCheck   `json:"weights,omitempty"`
	Goldens   *GoldensCheck   `json:"goldens,omitempty"`
	KLD       *KLDCheck       `json:"kld,omitempty"`
}

// IntegrityCheck reports the artifact format's own checksums.
type IntegrityCheck struct {
	Passed bool `json:"passed"`
	// Error names the first tensor whose checksum failed.
	Error string `json:"error,omitempty"`
}

// ModelInfo identifies a verified model.
type ModelInfo struct {
	Path    string `json:"path"`
	Format  string `json:"format"`
	Family  string `json:"family"`
	Tensors int    `json:"tensors"`
	// Types counts tensors per stored type.
	Types map[string]int `json:"types"`
}

// Failure is one failed check.
type Failure struct {
	// Check is the report section: config, tensor_set, tokenizer,
	// weights, goldens or kld.
	Check string `json:"check"`
	// Subject is what failed within it: a tensor name, "prompt N", a
	// config field; empty when the check failed as a whole.
	Subject string `json:"subject,omitempty"`
	Message string `json:"message"`
}

// String renders "check subject: message".
func (f Failure) String() string {
	if f.Subject == "" {
		return f.Check + ": " + f.Message
	}
	return f.Check + " " + f.Subject + ": " + f.Message
}

// WeightsCheck is the per-tensor comparison.
type WeightsCheck struct {
	Passed bool `json:"passed"`
	// Compared is the number of tensors compared, Failed how many failed.
	Compared int `json:"compared"`
	Failed   int `json:"failed"`
	// WorstCosine is the lowest cosine (WorstCosineTensor its tensor);
	// WorstBoundRatio the largest rounding-bound ratio among plain float
	// tensors (WorstBoundTensor); WorstRelRMSE the largest relative RMSE.
	WorstCosine       Num    `json:"worst_cosine"`
	WorstCosineTensor string `json:"worst_cosine_tensor"`
	WorstBoundRatio   Num    `json:"worst_bound_ratio"`
	WorstBoundTensor  string `json:"worst_bound_tensor,omitempty"`
	WorstRelRMSE      Num    `json:"worst_rel_rmse"`
	WorstRelTensor    string `json:"worst_rel_rmse_tensor"`
	// Tensors holds every tensor's figures in the artifact's order.
	Tensors []TensorResult `json:"tensors"`
}

// KLDStats are the llama-perplexity --kl-divergence figures of a model
// against a base model (runtime.KLDResult), in nats.
type KLDStats struct {
	Ctx    int `json:"ctx"`
	Chunks int `json:"chunks"`
	// Count is the number of scored tokens.
	Count         int `json:"scored_tokens"`
	PPL           Num `json:"ppl"`
	PPLError      Num `json:"ppl_error"`
	BasePPL       Num `json:"base_ppl"`
	BasePPLError  Num `json:"base_ppl_error"`
	PPLRatio      Num `json:"ppl_ratio"`
	PPLRatioError Num `json:"ppl_ratio_error"`
	KLDMean       Num `json:"kld_mean"`
	KLDMeanError  Num `json:"kld_mean_error"`
	KLDMedian     Num `json:"kld_median"`
	KLD99         Num `json:"kld_p99"`
	KLDMax        Num `json:"kld_max"`
	SameTop       Num `json:"same_top"`
	SameTopError  Num `json:"same_top_error"`
	DeltaPRMS     Num `json:"rms_delta_p"`
	DeltaPMean    Num `json:"mean_delta_p"`
	DeltaPMaxAbs  Num `json:"max_abs_delta_p"`
}

// NewKLDStats copies a runtime.KLDResult's summary figures.
func NewKLDStats(r runtime.KLDResult) KLDStats {
	return KLDStats{Ctx: r.Ctx, Chunks: r.Chunks, Count: r.Count,
		PPL: Num(r.PPL), PPLError: Num(r.PPLError), BasePPL: Num(r.BasePPL), BasePPLError: Num(r.BasePPLError),
		PPLRatio: Num(r.PPLRatio), PPLRatioError: Num(r.PPLRatioError),
		KLDMean: Num(r.KLDMean), KLDMeanError: Num(r.KLDMeanError), KLDMedian: Num(r.KLDMedian), KLD99: Num(r.KLD99), KLDMax: Num(r.KLDMax),
		SameTop: Num(r.SameTop), SameTopError: Num(r.SameTopError),
		DeltaPRMS: Num(r.DeltaPRMS), DeltaPMean: Num(r.DeltaPMean), DeltaPMaxAbs: Num(r.DeltaPMaxAbs)}
}

// KLDCheck is the KL-divergence check of the artifact against the source
// on a text.
type KLDCheck struct {
	Passed bool   `json:"passed"`
	Text   string `json:"text"`
	// Tokens is the text's length in tokens (BOS included).
	Tokens int `json:"tokens"`
	KLDStats
	// MaxKLD and MinSameTop are the limits applied (0: not applied).
	MaxKLD     float64 `json:"max_kld"`
	MinSameTop float64 `json:"min_same_top"`
	// Seconds is the wall time; TokensPerSecond counts the tokens both
	// models evaluated (2 × chunks × (ctx−1)) per second.
	Seconds         Num    `json:"seconds"`
	TokensPerSecond Num    `json:"tokens_per_second"`
	Reason          string `json:"reason,omitempty"`
}

// Options configures Run.
type Options struct {
	// Tensors tunes the per-tensor comparison.
	Tensors TensorOptions
	// Tolerances limit the goldens and KLD checks.
	Tolerances Tolerances
	// Goldens, when not nil, are checked against the artifact;
	// GoldensDir names where they came from in the report.
	Goldens    *runtime.Goldens
	GoldensDir string
	// Text, when not empty, is tokenized with the source's tokenizer (BOS
	// first) and the artifact's KL divergence against the source measured
	// on Ctx-token chunks (Chunks of them; 0 = all). TextName names it in
	// the report.
	Text     string
	TextName string
	Ctx      int
	Chunks   int
	// Runtime loads the models for the goldens and KLD checks.
	Runtime runtime.Options
	// KLDProgress, when set, is called after each KLD chunk.
	KLDProgress func(done, total int)
}

// Run verifies artifact against source (which may be nil when only
// opts.Goldens is to be checked). A failed check is recorded in the
// report; an error means a check could not run (unreadable tensor data,
// a text too short for the context, goldens for another vocabulary).
func Run(artifact, source *ir.Model, opts Options) (*Report, error) {
	r := &Report{Version: ReportVersion, Artifact: info(artifact)}
	switch err := ir.CheckIntegrity(artifact); {
	case errors.Is(err, ir.ErrNoIntegrity):
	case err != nil:
		r.Integrity = &IntegrityCheck{Passed: false, Error: err.Error()}
		r.fail("integrity", "", err.Error())
	default:
		r.Integrity = &IntegrityCheck{Passed: true}
	}
	if source != nil {
		si := info(source)
		r.Source = &si
		r.Config = CheckConfig(artifact.Config, source.Config)
		for _, d := range r.Config.Differences {
			r.fail("config", "", d)
		}
		r.TensorSet = CheckTensorSet(artifact, source)
		for _, n := range r.TensorSet.Missing {
			r.fail("tensor_set", n, "missing from the artifact")
		}
		for _, n := range r.TensorSet.Extra {
			r.fail("tensor_set", n, "not in the source")
		}
		for _, d := range r.TensorSet.ShapeMismatches {
			r.fail("tensor_set", "", "shape differs: "+d)
		}
		r.Tokenizer = CheckTokenizer(artifact.Tokenizer, source.Tokenizer)
		for _, d := range r.Tokenizer.Differences {
			r.fail("tokenizer", "", d)
		}
		if n := r.Tokenizer.DifferenceCount - len(r.Tokenizer.Differences); n > 0 {
			r.fail("tokenizer", "", fmt.Sprintf("... and %d more differences", n))
		}
		res, err := CompareTensors(artifact, source, opts.Tensors)
		if err != nil {
			return nil, err
		}
		r.Weights = summarizeWeights(res)
		for _, t := range res {
			if !t.Passed {
				r.fail("weights", t.Name, t.Reason)
			}
		}
	}
	if opts.Goldens == nil && opts.Text == "" {
		r.finish()
		return r, nil
	}
	art, err := runtime.Load(artifact, opts.Runtime)
	if err != nil {
		return nil, err
	}
	if opts.Goldens != nil {
		g, err := CheckGoldens(art, opts.Goldens, opts.Tolerances)
		if err != nil {
			return nil, err
		}
		g.Dir = opts.GoldensDir
		r.Goldens = g
		for _, p := range g.Prompts {
			if !p.Passed {
				r.fail("goldens", fmt.Sprintf("prompt %d", p.Index), p.Reason)
			}
		}
	}
	if opts.Text != "" {
		if source == nil {
			return nil, errors.New("verify: a KLD check needs a source model")
		}
		k, err := checkKLD(art, artifact, source, opts)
		if err != nil {
			return nil, err
		}
		r.KLD = k
		if !k.Passed {
			r.fail("kld", "", k.Reason)
		}
	}
	r.finish()
	return r, nil
}

func (r *Report) fail(check, subject, msg string) {
	r.Failures = append(r.Failures, Failure{Check: check, Subject: subject, Message: msg})
}

func (r *Report) finish() {
	if r.Failures == nil {
		r.Failures = []Failure{}
	}
	r.Passed = len(r.Failures) == 0
}

func info(m *ir.Model) ModelInfo {
	mi := ModelInfo{Path: m.Provenance.Path, Format: m.Provenance.Format, Family: string(m.Config.Family),
		Tensors: len(m.Tensors), Types: map[string]int{}}
	for _, t := range m.Tensors {
		mi.Types[t.DType.String()]++
	}
	return mi
}

func summarizeWeights(res []TensorResult) *WeightsCheck {
	w := &WeightsCheck{Passed: true, Compared: len(res), Tensors: res, WorstCosine: 1}
	nan := func(x Num) bool { return math.IsNaN(float64(x)) }
	// NaN counts as the worst figure on either scale.
	lower := func(a, b Num) bool { return a < b || (nan(a) && !nan(b)) }
	higher := func(a, b Num) bool { return a > b || (nan(a) && !nan(b)) }
	for i, t := range res {
		if !t.Passed {
			w.Passed = false
			w.Failed++
		}
		if i == 0 || lower(t.Cosine, w.WorstCosine) {
			w.WorstCosine, w.WorstCosineTensor = t.Cosine, t.Name
		}
		if t.Rule == "rounding" && (w.WorstBoundTensor == "" || higher(t.MaxBoundRatio, w.WorstBoundRatio)) {
			w.WorstBoundRatio, w.WorstBoundTensor = t.MaxBoundRatio, t.Name
		}
		if i == 0 || higher(t.RelRMSE, w.WorstRelRMSE) {
			w.WorstRelRMSE, w.WorstRelTensor = t.RelRMSE, t.Name
		}
	}
	return w
}

// checkKLD measures the artifact's KL divergence against the source.
func checkKLD(art *runtime.Model, artifact, source *ir.Model, opts Options) (*KLDCheck, error) {
	tk := source.Tokenizer
	if tk == nil {
		tk = artifact.Tokenizer
	}
	if tk == nil {
		return nil, errors.New("verify: neither model has a tokenizer to tokenize the text with")
	}
	enc, err := tokenizer.New(tk)
	if err != nil {
		return nil, err
	}
	src, err := runtime.Load(source, opts.Runtime)
	if err != nil {
		return nil, fmt.Errorf("verify: source: %w", err)
	}
	tokens := PromptIDs(enc, opts.Text)
	popts := src.DefaultPerplexityOptions()
	popts.Progress = opts.KLDProgress
	start := time.Now()
	res, err := runtime.KLDivergence(art, src, tokens, opts.Ctx, opts.Chunks, popts)
	if err != nil {
		return nil, err
	}
	secs := time.Since(start).Seconds()
	k := &KLDCheck{Text: opts.TextName, Tokens: len(tokens), KLDStats: NewKLDStats(res),
		MaxKLD: opts.Tolerances.MaxKLD, MinSameTop: opts.Tolerances.MinTop1, Seconds: Num(secs)}
	if secs > 0 {
		k.TokensPerSecond = Num(float64(2*res.Chunks*(res.Ctx-1)) / secs)
	}
	only := Tolerances{MaxKLD: opts.Tolerances.MaxKLD, MinTop1: opts.Tolerances.MinTop1}
	k.Reason = only.exceeded(0, 0, res.SameTop, res.KLDMean)
	k.Passed = k.Reason == ""
	return k, nil
}

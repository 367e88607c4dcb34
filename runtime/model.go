package runtime

import (
	"errors"
	"fmt"
	"math"
	goruntime "runtime"

	"github.com/gemmaconv/gemmaconv/ir"
)

// CacheMode selects whether dequantized float32 weights are kept in memory.
type CacheMode int

const (
	// CacheAuto caches the weights when their float32 size is at most
	// AutoCacheBytes, and streams them otherwise.
	CacheAuto CacheMode = iota
	// CacheNone never caches: memory is the stored model plus a fixed
	// working set.
	CacheNone
	// CacheAll dequantizes every matrix into memory at load time.
	CacheAll
)

// String names the mode ("auto", "none", "all").
func (c CacheMode) String() string {
	switch c {
	case CacheAuto:
		return "auto"
	case CacheNone:
		return "none"
	case CacheAll:
		return "all"
	}
	return fmt.Sprintf("CacheMode(%d)", int(c))
}

// AutoCacheBytes is the float32 weight size up to which CacheAuto caches.
const AutoCacheBytes = 128 << 20

// DefaultBatchSize is the largest number of tokens pushed through the
// layers together when Options.BatchSize is 0.
const DefaultBatchSize = 512

// Options configures Load.
type Options struct {
	// Workers is the number of goroutines each step uses; 0 means
	// GOMAXPROCS. Results are identical for every worker count.
	Workers int
	// Cache selects weight caching (default CacheAuto).
	Cache CacheMode
	// BatchSize is the most tokens processed through the layers at once
	// (0 = DefaultBatchSize). Longer inputs are split; each batch
	// dequantizes every weight row once. It also sizes the ring buffer of
	// sliding-window layers' KV cache (window + BatchSize - 1 positions).
	BatchSize int
}

// Model is a loaded Gemma decoder ready to run. It is safe to use from
// several goroutines through separate States.
type Model struct {
	// Config is the model's configuration.
	Config ir.Config

	workers    int
	batch      int
	embd       *Matrix
	output     *Matrix // embd when the embeddings are tied
	outputNorm []float32
	layers     []layer
	freqs      [2][]float32 // inverse RoPE frequencies: [0] global, [1] local
	embScale   float32
	qScale     float32
	cached     bool
	bos        int32 // the tokenizer's BOS when it adds one, else -1
}

// layer holds one decoder block's weights. Norm weights hold
// NormOffset + w, as float32.
type layer struct {
	attnNorm, ffnNorm, postAttnNorm, postFFNNorm, qNorm, kNorm []float32
	q, k, v, o, gate, up, down                                 *Matrix
	sliding                                                    bool
}

// Load prepares m for inference. It validates the configuration and the
// tensor set, checks that every weight type can be dequantized, decodes the
// norm weights and, depending on opts.Cache, dequantizes the matrices.
func Load(m *ir.Model, opts Options) (*Model, error) {
	cfg := m.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NormOffset != 0 && cfg.NormOffset != 1 {
		return nil, fmt.Errorf("runtime: norm offset %v is neither 0 nor 1", cfg.NormOffset)
	}
	byName := map[string]*ir.Tensor{}
	for _, t := range m.Tensors {
		byName[t.Name] = t
	}
	for _, s := range ir.ExpectedTensors(cfg) {
		t := byName[s.Name]
		if t == nil {
			if s.Optional {
				continue
			}
			return nil, fmt.Errorf("runtime: tensor %s is missing", s.Name)
		}
		if len(t.Shape) != len(s.Shape) {
			return nil, fmt.Errorf("runtime: tensor %s has shape %v, the config implies %v", s.Name, t.Shape, s.Shape)
		}
		for i := range s.Shape {
			if t.Shape[i] != s.Shape[i] {
				return nil, fmt.Errorf("runtime: tensor %s has shape %v, the config implies %v", s.Name, t.Shape, s.Shape)
			}
		}
		if t.Source == nil {
			return nil, fmt.Errorf("runtime: tensor %s has no data source", s.Name)
		}
	}
	md := &Model{Config: cfg, workers: opts.Workers, batch: opts.BatchSize}
	if md.workers <= 0 {
		md.workers = goruntime.GOMAXPROCS(0)
	}
	if md.batch <= 0 {
		md.batch = DefaultBatchSize
	}
	var err error
	mat := func(name string) *Matrix {
		if err != nil {
			return nil
		}
		var mm *Matrix
		mm, err = NewMatrix(byName[name])
		if err != nil {
			err = fmt.Errorf("runtime: %w", err)
		}
		return mm
	}
	norm := func(name string) []float32 {
		if err != nil {
			return nil
		}
		var w []float32
		w, err = normWeight(byName[name], cfg.NormOffset)
		return w
	}
	md.embd = mat("token_embd.weight")
	md.output = md.embd
	if !cfg.TiedEmbeddings {
		md.output = mat("output.weight")
	}
	md.outputNorm = norm("output_norm.weight")
	md.layers = make([]layer, cfg.NumLayers)
	for i := range md.layers {
		p := fmt.Sprintf("blk.%d.", i)
		l := &md.layers[i]
		l.sliding = cfg.Sliding[i]
		l.attnNorm = norm(p + "attn_norm.weight")
		l.ffnNorm = norm(p + "ffn_norm.weight")
		if cfg.PostNorms {
			l.postAttnNorm = norm(p + "post_attention_norm.weight")
			l.postFFNNorm = norm(p + "post_ffw_norm.weight")
		}
		if cfg.QKNorm {
			l.qNorm = norm(p + "attn_q_norm.weight")
			l.kNorm = norm(p + "attn_k_norm.weight")
		}
		l.q = mat(p + "attn_q.weight")
		l.k = mat(p + "attn_k.weight")
		l.v = mat(p + "attn_v.weight")
		l.o = mat(p + "attn_output.weight")
		l.gate = mat(p + "ffn_gate.weight")
		l.up = mat(p + "ffn_up.weight")
		l.down = mat(p + "ffn_down.weight")
	}
	if err != nil {
		return nil, err
	}
	md.freqs[0] = ropeFreqs(cfg.HeadDim, cfg.RopeBase, cfg.RopeScale)
	md.freqs[1] = ropeFreqs(cfg.HeadDim, cfg.RopeBaseLocal, 1)
	md.bos = -1
	if tk := m.Tokenizer; tk != nil && tk.AddBOS && tk.BOS >= 0 && int(tk.BOS) < cfg.Vocab {
		md.bos = tk.BOS
	}
	md.embScale = float32(math.Sqrt(float64(cfg.Hidden)))
	md.qScale = float32(math.Pow(cfg.QueryPreAttnScalar, -0.5))

	cache := opts.Cache == CacheAll
	if opts.Cache == CacheAuto {
		cache = md.floatBytes() <= AutoCacheBytes
	}
	if cache {
		for _, mm := range md.matrices() {
			if err := mm.cache(); err != nil {
				return nil, fmt.Errorf("runtime: %w", err)
			}
		}
		md.cached = true
	}
	return md, nil
}

// matrices lists every distinct weight matrix.
func (md *Model) matrices() []*Matrix {
	ms := []*Matrix{md.embd}
	if md.output != md.embd {
		ms = append(ms, md.output)
	}
	for i := range md.layers {
		l := &md.layers[i]
		ms = append(ms, l.q, l.k, l.v, l.o, l.gate, l.up, l.down)
	}
	return ms
}

// floatBytes is the size of all matrices dequantized to float32.
func (md *Model) floatBytes() int64 {
	var n int64
	for _, m := range md.matrices() {
		n += 4 * int64(m.Rows) * int64(m.Cols)
	}
	return n
}

// Cached reports whether the weights were dequantized into memory at load.
func (md *Model) Cached() bool { return md.cached }

// Workers is the number of goroutines each step uses.
func (md *Model) Workers() int { return md.workers }

// normWeight decodes a 1-D norm weight and adds the norm offset in float32
// (gemma_pytorch: 1 + self.weight.float()).
func normWeight(t *ir.Tensor, offset float32) ([]float32, error) {
	n := t.NumElements()
	rb, err := ir.RowBytes(t.DType, n)
	if err != nil {
		return nil, fmt.Errorf("runtime: tensor %s: %w", t.Name, err)
	}
	dec, err := decoder(t.DType)
	if err != nil {
		return nil, fmt.Errorf("runtime: tensor %s: %w", t.Name, err)
	}
	raw := make([]byte, rb)
	if _, err := t.Source.ReadAt(raw, 0); err != nil {
		return nil, fmt.Errorf("runtime: tensor %s: reading %d bytes: %w", t.Name, rb, err)
	}
	w := make([]float32, n)
	if err := dec(raw, w); err != nil {
		return nil, fmt.Errorf("runtime: tensor %s: %w", t.Name, err)
	}
	for i := range w {
		w[i] = offset + w[i]
	}
	return w, nil
}

// ropeFreqs returns the inverse frequencies of gemma_pytorch's
// precompute_freqs_cis with every step rounded to float32:
// 1 / theta^(float32(2j)/d) / scale.
func ropeFreqs(headDim int, theta, scale float64) []float32 {
	f := make([]float32, headDim/2)
	for j := range f {
		e := float32(2*j) / float32(headDim)
		p := float32(math.Pow(float64(float32(theta)), float64(e)))
		f[j] = (1 / p) / float32(scale)
	}
	return f
}

// State is one sequence being evaluated: its position and KV cache. A
// State is not safe for concurrent use.
type State struct {
	m    *Model
	max  int
	pos  int
	kc   [][]float32 // per layer: slots × (kv heads × head dim)
	vc   [][]float32
	size []int // ring size per layer (max for global layers)

	buf     buffers
	observe Observer
}

// Observer receives the input of every weight-matrix product a State
// computes, just before the product: tensor is the weight's canonical name
// (blk.N.attn_q.weight, ..., and token_embd.weight or output.weight for
// the output projection), x holds n rows of cols float32 activations, one
// row per token, in position order. Products that share an input (q, k and
// v; gate and up) each report it. The embedding lookup is not a product
// and is not reported; the output projection is reported only for the
// positions whose logits are computed. x is the State's own buffer: an
// Observer must not modify or keep it, and it runs on the goroutine that
// called Forward.
type Observer func(tensor string, x []float32, n, cols int)

// SetObserver installs fn (nil removes it) as the observer of the State's
// matrix products, as importance-matrix collection needs (see
// ComputeImatrix). Without one the forward pass pays a single nil check
// per product.
func (s *State) SetObserver(fn Observer) { s.observe = fn }

// NewState returns an empty sequence that can hold maxTokens positions.
// Global layers keep maxTokens positions; sliding-window layers keep a ring
// of window + BatchSize - 1 positions, all they can ever attend to.
func (md *Model) NewState(maxTokens int) *State {
	if maxTokens < 1 {
		maxTokens = 1
	}
	cfg := &md.Config
	s := &State{m: md, max: maxTokens}
	kvDim := cfg.NumKVHeads * cfg.HeadDim
	s.kc = make([][]float32, cfg.NumLayers)
	s.vc = make([][]float32, cfg.NumLayers)
	s.size = make([]int, cfg.NumLayers)
	for i, l := range md.layers {
		n := maxTokens
		if l.sliding {
			n = min(n, cfg.SlidingWindow+md.batch-1)
		}
		s.size[i] = n
		s.kc[i] = make([]float32, n*kvDim)
		s.vc[i] = make([]float32, n*kvDim)
	}
	return s
}

// Pos is the number of tokens the state has processed.
func (s *State) Pos() int { return s.pos }

// Reset empties the state for a new sequence, keeping its memory.
func (s *State) Reset() { s.pos = 0 }

// Forward runs tokens through the model after the positions already in the
// state and returns the logits of every new position, len(tokens) rows of
// Vocab values, row-major. Inputs longer than BatchSize run in batches; on
// an error the state keeps the batches that completed (Pos says how many
// tokens), so Reset it to start over.
func (s *State) Forward(tokens []int32) ([]float32, error) {
	out := make([]float32, len(tokens)*s.m.Config.Vocab)
	return out, s.forward(tokens, 0, out)
}

// ForwardLast runs tokens like Forward but returns only the logits of the
// last position (Vocab values), skipping the output projection of the rest.
func (s *State) ForwardLast(tokens []int32) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, errors.New("runtime: no tokens")
	}
	out := make([]float32, s.m.Config.Vocab)
	return out, s.forward(tokens, len(tokens)-1, out)
}

// Logits runs tokens from position 0 in a fresh state and returns the
// logits of every position ([len(tokens), Vocab] row-major).
func (md *Model) Logits(tokens []int32) ([]float32, error) {
	return md.NewState(len(tokens)).Forward(tokens)
}

// forward processes tokens and writes the logits of tokens[from:] into out
// (len(tokens)-from rows).
func (s *State) forward(tokens []int32, from int, out []float32) error {
	cfg := &s.m.Config
	if s.pos+len(tokens) > s.max {
		return fmt.Errorf("runtime: %d tokens after position %d exceed the state's %d positions", len(tokens), s.pos, s.max)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= cfg.Vocab {
			return fmt.Errorf("runtime: token %d at index %d is outside the vocabulary of %d", t, i, cfg.Vocab)
		}
	}
	for start := 0; start < len(tokens); start += s.m.batch {
		end := min(start+s.m.batch, len(tokens))
		lo := max(from, start)
		var dst []float32
		if lo < end {
			dst = out[(lo-from)*cfg.Vocab : (end-from)*cfg.Vocab]
		}
		if err := s.step(tokens[start:end], lo-start, dst); err != nil {
			return err
		}
	}
	return nil
}

package ir

import (
	"fmt"
	"math"
)

// Family is a Gemma generation. Its value is the GGUF architecture name.
type Family string

// The supported families.
const (
	Gemma1 Family = "gemma"
	Gemma2 Family = "gemma2"
	Gemma3 Family = "gemma3"
)

// Config holds every hyperparameter the forward pass needs. Fields that a
// family does not use are zero (softcaps, window) or false.
type Config struct {
	Family        Family
	NumLayers     int
	Hidden        int // embedding width
	FFN           int // feed-forward (GeGLU) width
	NumHeads      int // query heads
	NumKVHeads    int // key/value heads: 1 = MQA, NumHeads = MHA, else GQA
	HeadDim       int
	Vocab         int
	ContextLength int // maximum positions the model was trained for
	// RMSNormEps is the epsilon inside every RMSNorm's square root, kept in
	// float32 because that is how every format stores it.
	RMSNormEps float32
	// RopeBase is the RoPE frequency base of global-attention layers;
	// RopeBaseLocal that of sliding-window layers (equal to RopeBase
	// before Gemma 3).
	RopeBase      float64
	RopeBaseLocal float64
	// RopeScale is the linear RoPE scaling factor of global layers
	// (positions are divided by it); 1 means none.
	RopeScale float64
	// SlidingWindow is the attention window of local layers in tokens;
	// Sliding[i] tells whether layer i is a local (sliding-window) layer.
	SlidingWindow int
	Sliding       []bool
	// AttnSoftcap and FinalSoftcap cap attention scores and output logits
	// as cap*tanh(x/cap); 0 means no capping.
	AttnSoftcap  float32
	FinalSoftcap float32
	// QueryPreAttnScalar scales queries by 1/sqrt(QueryPreAttnScalar).
	QueryPreAttnScalar float64
	// QKNorm: queries and keys are RMS-normalized per head (Gemma 3).
	QKNorm bool
	// PostNorms: the sandwich norms after attention and after the FFN
	// (post_attention_norm, post_ffw_norm) exist (Gemma 2 and later).
	PostNorms bool
	// TiedEmbeddings: the output projection is token_embd; no output tensor.
	TiedEmbeddings bool
	// NormOffset is the RMSNorm convention of the stored norm weights: the
	// model computes x*(NormOffset+w). Hugging Face, PyTorch and JAX files
	// store w with NormOffset 1; GGUF stores the effective weight, 0.
	NormOffset float32
}

// DefaultSliding returns the family's standard layer pattern: none for
// Gemma 1, every even layer for Gemma 2, five local then one global for
// Gemma 3.
func DefaultSliding(f Family, layers int) []bool {
	s := make([]bool, layers)
	for i := range s {
		switch f {
		case Gemma2:
			s[i] = i%2 == 0
		case Gemma3:
			s[i] = (i+1)%6 != 0
		}
	}
	return s
}

// Validate checks that the hyperparameters are present and consistent.
func (c *Config) Validate() error {
	switch c.Family {
	case Gemma1, Gemma2, Gemma3:
	default:
		return fmt.Errorf("config: unsupported model family %q", c.Family)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"layers", c.NumLayers}, {"hidden size", c.Hidden}, {"feed-forward size", c.FFN}, {"heads", c.NumHeads}, {"kv heads", c.NumKVHeads}, {"head dim", c.HeadDim}, {"vocab", c.Vocab}} {
		if f.v <= 0 || f.v > 1<<24 {
			return fmt.Errorf("config: %s = %d is out of range", f.name, f.v)
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("config: %d heads are not a multiple of %d kv heads", c.NumHeads, c.NumKVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("config: head dim %d is odd (RoPE needs pairs)", c.HeadDim)
	}
	if len(c.Sliding) != c.NumLayers {
		return fmt.Errorf("config: layer pattern has %d entries for %d layers", len(c.Sliding), c.NumLayers)
	}
	for _, s := range c.Sliding {
		if s && c.SlidingWindow <= 0 {
			return fmt.Errorf("config: sliding-window layers without a window size")
		}
	}
	if !(c.RMSNormEps > 0) || !(c.RopeBase > 0) || !(c.RopeBaseLocal > 0) || !(c.RopeScale > 0) || !(c.QueryPreAttnScalar > 0) {
		return fmt.Errorf("config: eps, rope bases, rope scale and query scalar must be positive")
	}
	for _, v := range []float64{c.RopeBase, c.RopeBaseLocal, c.RopeScale, c.QueryPreAttnScalar, float64(c.AttnSoftcap), float64(c.FinalSoftcap)} {
		if math.IsInf(v, 0) || math.IsNaN(v) || v < 0 {
			return fmt.Errorf("config: non-finite or negative hyperparameter %v", v)
		}
	}
	return nil
}

// TensorSpec is a tensor the config implies.
type TensorSpec struct {
	Name     string
	Shape    []int64
	Optional bool
}

// ExpectedTensors lists, in canonical order, the tensors a model with this
// config has and their shapes.
func ExpectedTensors(c Config) []TensorSpec {
	h, f := int64(c.Hidden), int64(c.FFN)
	q, kv := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	specs := []TensorSpec{{Name: "token_embd.weight", Shape: []int64{int64(c.Vocab), h}}}
	for i := 0; i < c.NumLayers; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		add := func(n string, s ...int64) { specs = append(specs, TensorSpec{Name: p + n + ".weight", Shape: s}) }
		add("attn_norm", h)
		add("ffn_down", h, f)
		add("ffn_gate", f, h)
		add("ffn_up", f, h)
		if c.PostNorms {
			add("post_attention_norm", h)
			add("post_ffw_norm", h)
		}
		add("ffn_norm", h)
		if c.QKNorm {
			add("attn_k_norm", int64(c.HeadDim))
		}
		add("attn_k", kv, h)
		add("attn_output", h, q)
		if c.QKNorm {
			add("attn_q_norm", int64(c.HeadDim))
		}
		add("attn_q", q, h)
		add("attn_v", kv, h)
	}
	specs = append(specs, TensorSpec{Name: "output_norm.weight", Shape: []int64{h}})
	if !c.TiedEmbeddings {
		specs = append(specs, TensorSpec{Name: "output.weight", Shape: []int64{int64(c.Vocab), h}})
	}
	return specs
}

// IsNormWeight reports whether a canonical tensor name is an RMSNorm
// weight, the tensors NormOffset applies to.
func IsNormWeight(name string) bool {
	for _, s := range []string{"attn_norm.weight", "ffn_norm.weight", "post_attention_norm.weight", "post_ffw_norm.weight", "attn_q_norm.weight", "attn_k_norm.weight", "output_norm.weight"} {
		if name == s || (len(name) > len(s) && name[len(name)-len(s):] == s && name[len(name)-len(s)-1] == '.') {
			return true
		}
	}
	return false
}

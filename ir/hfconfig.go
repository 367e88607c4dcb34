package ir

import (
	"encoding/json"
	"fmt"
	"math"
)

// hfConfig is the subset of a Hugging Face config.json that describes a
// Gemma text decoder. Pointers distinguish "absent" from zero so that
// transformers' defaults apply only to absent fields.
type hfConfig struct {
	ModelType             string          `json:"model_type"`
	TextConfig            json.RawMessage `json:"text_config"`
	VocabSize             *int            `json:"vocab_size"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeLocalBaseFreq     *float64        `json:"rope_local_base_freq"`
	RopeScaling           *struct {
		Factor   float64 `json:"factor"`
		RopeType string  `json:"rope_type"`
		Type     string  `json:"type"`
	} `json:"rope_scaling"`
	QueryPreAttnScalar    *float64 `json:"query_pre_attn_scalar"`
	SlidingWindow         *int     `json:"sliding_window"`
	SlidingWindowPattern  *int     `json:"sliding_window_pattern"`
	LayerTypes            []string `json:"layer_types"`
	FinalLogitSoftcapping optFloat `json:"final_logit_softcapping"`
	AttnLogitSoftcapping  optFloat `json:"attn_logit_softcapping"`
	TieWordEmbeddings     *bool    `json:"tie_word_embeddings"`
	HiddenActivation      string   `json:"hidden_activation"`
	HiddenAct             string   `json:"hidden_act"`
}

// ConfigFromHF parses a Hugging Face config.json for model_type "gemma",
// "gemma2", "gemma3_text", or "gemma3" (whose text_config is used).
// Absent hyperparameters take transformers' defaults for that model type;
// the sizes (layers, widths, heads, vocab) must be present.
func ConfigFromHF(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	if h.ModelType == "gemma3" && len(h.TextConfig) > 0 {
		var t hfConfig
		if err := json.Unmarshal(h.TextConfig, &t); err != nil {
			return Config{}, fmt.Errorf("config.json text_config: %w", err)
		}
		if t.TieWordEmbeddings == nil {
			t.TieWordEmbeddings = h.TieWordEmbeddings
		}
		t.ModelType = "gemma3_text"
		h = t
	}
	var c Config
	switch h.ModelType {
	case "gemma":
		c.Family = Gemma1
	case "gemma2":
		c.Family = Gemma2
	case "gemma3_text", "gemma3":
		c.Family = Gemma3
	default:
		return Config{}, fmt.Errorf("config.json: model_type %q is not a Gemma text model (gemma, gemma2, gemma3_text, gemma3)", h.ModelType)
	}
	act := h.HiddenActivation
	if act == "" {
		act = h.HiddenAct
	}
	if act != "" && act != "gelu_pytorch_tanh" && act != "gelu" {
		return Config{}, fmt.Errorf("config.json: hidden activation %q is not supported (Gemma uses gelu_pytorch_tanh)", act)
	}
	req := func(name string, p *int, dst *int) error {
		if p == nil {
			return fmt.Errorf("config.json: %s is missing", name)
		}
		*dst = *p
		return nil
	}
	for _, r := range []struct {
		n   string
		p   *int
		dst *int
	}{{"num_hidden_layers", h.NumHiddenLayers, &c.NumLayers}, {"hidden_size", h.HiddenSize, &c.Hidden},
		{"intermediate_size", h.IntermediateSize, &c.FFN}, {"num_attention_heads", h.NumAttentionHeads, &c.NumHeads},
		{"vocab_size", h.VocabSize, &c.Vocab}} {
		if err := req(r.n, r.p, r.dst); err != nil {
			return Config{}, err
		}
	}
	c.NumKVHeads = intOr(h.NumKeyValueHeads, c.NumHeads)
	if c.NumHeads <= 0 {
		return Config{}, fmt.Errorf("config.json: num_attention_heads = %d", c.NumHeads)
	}
	c.HeadDim = intOr(h.HeadDim, c.Hidden/c.NumHeads)
	c.RMSNormEps = float32(floatOr(h.RMSNormEps, 1e-6))
	c.NormOffset = 1
	c.TiedEmbeddings = h.TieWordEmbeddings == nil || *h.TieWordEmbeddings
	c.RopeScale = 1
	switch c.Family {
	case Gemma1:
		c.ContextLength = intOr(h.MaxPositionEmbeddings, 8192)
		c.RopeBase = floatOr(h.RopeTheta, 10000)
		c.RopeBaseLocal = c.RopeBase
		c.QueryPreAttnScalar = float64(c.HeadDim)
	case Gemma2:
		c.ContextLength = intOr(h.MaxPositionEmbeddings, 8192)
		c.RopeBase = floatOr(h.RopeTheta, 10000)
		c.RopeBaseLocal = c.RopeBase
		c.QueryPreAttnScalar = floatOr(h.QueryPreAttnScalar, 256)
		c.SlidingWindow = intOr(h.SlidingWindow, 4096)
		c.AttnSoftcap = float32(h.AttnLogitSoftcapping.or(50))
		c.FinalSoftcap = float32(h.FinalLogitSoftcapping.or(30))
		c.PostNorms = true
	case Gemma3:
		c.ContextLength = intOr(h.MaxPositionEmbeddings, 131072)
		c.RopeBase = floatOr(h.RopeTheta, 1000000)
		c.RopeBaseLocal = floatOr(h.RopeLocalBaseFreq, 10000)
		c.QueryPreAttnScalar = floatOr(h.QueryPreAttnScalar, 256)
		c.SlidingWindow = intOr(h.SlidingWindow, 4096)
		c.AttnSoftcap = float32(h.AttnLogitSoftcapping.or(0))
		c.FinalSoftcap = float32(h.FinalLogitSoftcapping.or(0))
		c.PostNorms = true
		c.QKNorm = true
		if h.RopeScaling != nil {
			typ := h.RopeScaling.RopeType
			if typ == "" {
				typ = h.RopeScaling.Type
			}
			if typ != "linear" && typ != "default" {
				return Config{}, fmt.Errorf("config.json: rope_scaling type %q is not supported (linear only)", typ)
			}
			if typ == "linear" {
				c.RopeScale = h.RopeScaling.Factor
			}
		}
	}
	c.Sliding = DefaultSliding(c.Family, c.NumLayers)
	if c.Family == Gemma3 && h.SlidingWindowPattern != nil && *h.SlidingWindowPattern > 0 {
		for i := range c.Sliding {
			c.Sliding[i] = (i+1)%*h.SlidingWindowPattern != 0
		}
	}
	if len(h.LayerTypes) > 0 {
		if len(h.LayerTypes) != c.NumLayers {
			return Config{}, fmt.Errorf("config.json: layer_types has %d entries for %d layers", len(h.LayerTypes), c.NumLayers)
		}
		for i, t := range h.LayerTypes {
			switch t {
			case "sliding_attention":
				c.Sliding[i] = true
			case "full_attention":
				c.Sliding[i] = false
			default:
				return Config{}, fmt.Errorf("config.json: layer_types[%d] = %q", i, t)
			}
		}
	}
	if c.Family == Gemma1 {
		c.SlidingWindow = 0
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	return c, nil
}

func intOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func floatOr(p *float64, d float64) float64 {
	if p == nil || math.IsNaN(*p) {
		return d
	}
	return *p
}

// optFloat tells an absent key (default applies) from an explicit null
// (feature off, value 0) and a number.
type optFloat struct {
	set bool
	v   float64
}

func (o *optFloat) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &o.v)
}

// or returns the value, 0 for null, or d when the key was absent.
func (o optFloat) or(d float64) float64 {
	if !o.set {
		return d
	}
	return o.v
}

package pytorch

import (
	"fmt"

	"github.com/gemmaconv/gemmaconv/ir"
)

// preset is a released Gemma text model's hyperparameters that tensor
// shapes cannot tell: from google/gemma_pytorch gemma/config.py
// (get_config_for_*) and the matching Hugging Face config.json files.
type preset struct {
	name           string
	family         ir.Family
	layers, hidden int
	heads, kvHeads int
	headDim        int
	ffn            int
	queryScalar    float64
	window         int
	context        int
	ropeScale      float64
}

var presets = []preset{
	{"gemma-2b", ir.Gemma1, 18, 2048, 8, 1, 256, 16384, 256, 0, 8192, 1},
	{"gemma-7b", ir.Gemma1, 28, 3072, 16, 16, 256, 24576, 256, 0, 8192, 1},
	{"gemma-2-2b", ir.Gemma2, 26, 2304, 8, 4, 256, 9216, 256, 4096, 8192, 1},
	{"gemma-2-9b", ir.Gemma2, 42, 3584, 16, 8, 256, 14336, 256, 4096, 8192, 1},
	{"gemma-2-27b", ir.Gemma2, 46, 4608, 32, 16, 128, 36864, 144, 4096, 8192, 1},
	{"gemma-3-1b", ir.Gemma3, 26, 1152, 4, 1, 256, 6912, 256, 512, 32768, 1},
	{"gemma-3-4b", ir.Gemma3, 34, 2560, 8, 4, 256, 10240, 256, 1024, 131072, 8},
	{"gemma-3-12b", ir.Gemma3, 48, 3840, 16, 8, 256, 15360, 256, 1024, 131072, 8},
	{"gemma-3-27b", ir.Gemma3, 62, 5376, 32, 16, 128, 21504, 168, 1024, 131072, 8},
}

// shapes are the sizes a checkpoint's tensors tell.
type shapes struct {
	family              ir.Family
	layers, hidden, ffn int
	vocab               int
	qDim, kvDim         int
	headDim             int // from QK norms (Gemma 3); 0 otherwise
}

func (p *parts) shapes() (shapes, error) {
	s := shapes{family: p.family(), layers: p.numLayers()}
	e := p.embed.w.Shape
	if len(e) != 2 {
		return s, fmt.Errorf("embedding %s has shape %v, not a matrix", p.embed.wName, e)
	}
	s.vocab, s.hidden = int(e[0]), int(e[1])
	l0 := p.layers[0]
	if l0 == nil {
		return s, fmt.Errorf("no layer 0 tensors in the checkpoint")
	}
	dim := func(role string, i int) (int, error) {
		pt := l0[role]
		if pt == nil || len(pt.w.Shape) <= i {
			return 0, fmt.Errorf("layer 0 has no %s weight to infer sizes from", role)
		}
		return int(pt.w.Shape[i]), nil
	}
	var err error
	if s.ffn, err = dim("ffn_gate", 0); err != nil {
		return s, err
	}
	if s.qDim, err = dim("attn_output", 1); err != nil {
		return s, err
	}
	if l0["qkv"] != nil {
		rows, _ := dim("qkv", 0)
		s.kvDim = (rows - s.qDim) / 2
	} else if s.kvDim, err = dim("attn_k", 0); err != nil {
		return s, err
	}
	if l0["attn_q_norm"] != nil {
		s.headDim, _ = dim("attn_q_norm", 0)
	}
	return s, nil
}

// inferConfig builds the config of a checkpoint that came without one. The
// sizes come from tensor shapes; the rest (head count, RoPE, window, query
// scale, context) from the released model whose sizes match. A checkpoint
// that matches none needs a config.json.
func inferConfig(p *parts, tok *ir.Tokenizer) (ir.Config, string, error) {
	s, err := p.shapes()
	if err != nil {
		return ir.Config{}, "", fmt.Errorf("no config.json given or beside the weights, and %w", err)
	}
	var pr *preset
	for i := range presets {
		q := &presets[i]
		if q.family == s.family && q.layers == s.layers && q.hidden == s.hidden && q.ffn == s.ffn &&
			q.heads*q.headDim == s.qDim && q.kvHeads*q.headDim == s.kvDim && (s.headDim == 0 || s.headDim == q.headDim) {
			pr = q
			break
		}
	}
	if pr == nil {
		return ir.Config{}, "", fmt.Errorf("no config.json given or beside the weights, and the tensors (%s, %d layers, hidden %d, ffn %d, q dim %d, kv dim %d) match no released Gemma model whose remaining hyperparameters are known: pass --config with the model's Hugging Face config.json",
			s.family, s.layers, s.hidden, s.ffn, s.qDim, s.kvDim)
	}
	c := ir.Config{
		Family: pr.family, NumLayers: s.layers, Hidden: s.hidden, FFN: s.ffn,
		NumHeads: pr.heads, NumKVHeads: pr.kvHeads, HeadDim: pr.headDim, Vocab: s.vocab,
		ContextLength: pr.context, RMSNormEps: 1e-6, RopeBase: 10000, RopeBaseLocal: 10000, RopeScale: 1,
		QueryPreAttnScalar: pr.queryScalar, TiedEmbeddings: p.lmHead == nil, NormOffset: 1,
		SlidingWindow: pr.window,
	}
	switch pr.family {
	case ir.Gemma2:
		c.AttnSoftcap, c.FinalSoftcap = 50, 30
		c.PostNorms = true
	case ir.Gemma3:
		c.RopeBase = 1e6
		c.RopeScale = pr.ropeScale
		c.PostNorms, c.QKNorm = true, true
	}
	c.Sliding = ir.DefaultSliding(c.Family, c.NumLayers)
	note := fmt.Sprintf("no config.json: sizes inferred from tensor shapes; heads, RoPE, window, query scale and context taken from the released %s (gemma_pytorch preset)", pr.name)
	if tok != nil && len(tok.Pieces) < c.Vocab {
		note += fmt.Sprintf("; vocab set to the tokenizer's %d pieces (the embedding has %d rows)", len(tok.Pieces), c.Vocab)
		c.Vocab = len(tok.Pieces)
	}
	if err := c.Validate(); err != nil {
		return ir.Config{}, "", fmt.Errorf("inferred config: %w", err)
	}
	return c, note, nil
}

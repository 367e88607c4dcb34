package ir

import (
	"fmt"
	"strings"
)

// The Hugging Face tensor-name vocabulary of Gemma text decoders, shared by
// the readers of formats that use it (safetensors checkpoints,
// pytorch_model.bin files) and by writers of Hugging Face checkpoints.
// Names here are module paths, the tensor name less its ".weight"; see
// docs/ir.md, "Hugging Face", for the table.

// hfTextPrefixes are the prefixes of the text decoder's tensors: Gemma 3
// multimodal checkpoints as newer and older transformers save them, then
// plain causal LMs. "model." comes last because it prefixes the first.
var hfTextPrefixes = []string{"model.language_model.", "language_model.model.", "model."}

// hfVisionPrefixes mark Gemma 3's vision tower and projector.
var hfVisionPrefixes = []string{"vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."}

// hfOutput are the module paths of the output projection: causal LMs, and
// Gemma 3 multimodal checkpoints of older transformers.
var hfOutput = []string{"lm_head", "language_model.lm_head"}

// hfPair is a Hugging Face module path and its canonical name, both
// without ".weight".
type hfPair struct{ module, name string }

// hfGlobal maps the modules outside the layers, relative to the text
// decoder, to canonical names.
var hfGlobal = []hfPair{{"embed_tokens", "token_embd"}, {"norm", "output_norm"}}

// HFFamilyNorm is the per-layer norm whose meaning depends on the family:
// in Gemma 1 it is the norm before the feed-forward block (ffn_norm); Gemma
// 2 and 3 have sandwich norms and it is the norm after attention
// (post_attention_norm), with pre_feedforward_layernorm before the FFN.
const HFFamilyNorm = "post_attention_layernorm"

// hfLayer lists the modules of a decoder layer (under "model.layers.N.")
// with their canonical names (under "blk.N.") in Gemma 1 and in later
// families; "" where the family has no such module. The QK norms are
// mapped for every family, as Model.Validate rejects them where the config
// has none.
var hfLayer = []struct{ module, gemma1, later string }{
	{"input_layernorm", "attn_norm", "attn_norm"},
	{"self_attn.q_proj", "attn_q", "attn_q"},
	{"self_attn.k_proj", "attn_k", "attn_k"},
	{"self_attn.v_proj", "attn_v", "attn_v"},
	{"self_attn.o_proj", "attn_output", "attn_output"},
	{"self_attn.q_norm", "attn_q_norm", "attn_q_norm"},
	{"self_attn.k_norm", "attn_k_norm", "attn_k_norm"},
	{"mlp.gate_proj", "ffn_gate", "ffn_gate"},
	{"mlp.up_proj", "ffn_up", "ffn_up"},
	{"mlp.down_proj", "ffn_down", "ffn_down"},
	{HFFamilyNorm, "ffn_norm", "post_attention_norm"},
	{"pre_feedforward_layernorm", "", "ffn_norm"},
	{"post_feedforward_layernorm", "", "post_ffw_norm"},
}

// CutHFTextPrefix removes the text decoder's prefix from a Hugging Face
// tensor name or module path: "model." in causal LMs, or
// "model.language_model." / "language_model.model." in Gemma 3 multimodal
// checkpoints (newer and older transformers). It returns the rest
// ("layers.0.mlp.up_proj.weight") and whether a prefix was found.
func CutHFTextPrefix(name string) (rest string, ok bool) {
	for _, p := range hfTextPrefixes {
		if rest, ok = strings.CutPrefix(name, p); ok {
			return rest, true
		}
	}
	return name, false
}

// IsHFVision reports whether a Hugging Face tensor name or module path
// belongs to Gemma 3's vision tower or multimodal projector, which are not
// part of the text model.
func IsHFVision(name string) bool {
	for _, p := range hfVisionPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// HFGlobalName returns the canonical name, without ".weight", of a Hugging
// Face module outside the decoder layers, given by its full path: the
// embedding ("model.embed_tokens" → "token_embd"), the final norm
// ("model.norm" → "output_norm"), both also under the multimodal prefixes
// CutHFTextPrefix knows, and the output projection ("lm_head" or
// "language_model.lm_head" → "output"). ok is false for any other path.
func HFGlobalName(module string) (name string, ok bool) {
	for _, m := range hfOutput {
		if module == m {
			return "output", true
		}
	}
	rest, ok := CutHFTextPrefix(module)
	if !ok {
		return "", false
	}
	for _, g := range hfGlobal {
		if rest == g.module {
			return g.name, true
		}
	}
	return "", false
}

// HFLayerName returns the canonical name, without "blk.N." and ".weight",
// of a module of a Hugging Face decoder layer, given by its path within the
// layer ("self_attn.q_proj" → "attn_q"), in a model of family f. ok is
// false when the module is not a Gemma layer weight or not one of family f
// (the Gemma 2 and 3 sandwich norms in Gemma 1). An empty f stands for a
// family not known yet, as when a reader tells it from the tensors
// present: every module then maps to its name in the families that have
// it, except HFFamilyNorm, whose name only the family decides.
func HFLayerName(module string, f Family) (name string, ok bool) {
	for _, l := range hfLayer {
		if l.module == module {
			name = hfLayerName(l.gemma1, l.later, f)
			return name, name != ""
		}
	}
	return "", false
}

// hfLayerName picks a layer module's canonical name for family f (see
// HFLayerName).
func hfLayerName(gemma1, later string, f Family) string {
	switch {
	case f == Gemma1:
		return gemma1
	case f != "":
		return later
	case gemma1 == "" || gemma1 == later:
		return later
	case later == "":
		return gemma1
	}
	return "" // the family decides
}

// HFName is the inverse mapping for the text-only causal LM layout: the
// Hugging Face tensor name ("model.layers.0.input_layernorm.weight") under
// which transformers stores the canonical tensor of a model of family f.
func HFName(canonical string, f Family) (string, error) {
	base, ok := strings.CutSuffix(canonical, ".weight")
	if ok {
		if base == "output" {
			return hfOutput[0] + ".weight", nil
		}
		for _, g := range hfGlobal {
			if g.name == base {
				return "model." + g.module + ".weight", nil
			}
		}
		if rest, ok := strings.CutPrefix(base, "blk."); ok {
			if num, suffix, ok := strings.Cut(rest, "."); ok {
				for _, l := range hfLayer {
					if hfLayerName(l.gemma1, l.later, f) == suffix && suffix != "" {
						return "model.layers." + num + "." + l.module + ".weight", nil
					}
				}
			}
		}
	}
	return "", fmt.Errorf("no Hugging Face name for tensor %s of a %s model", canonical, f)
}

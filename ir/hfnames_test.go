package ir

import "testing"

func TestHFNames(t *testing.T) {
	layer := []struct {
		module string
		f      Family
		want   string // "" = not mapped
	}{
		{"self_attn.q_proj", Gemma1, "attn_q"},
		{"self_attn.q_proj", "", "attn_q"},
		{"mlp.down_proj", Gemma3, "ffn_down"},
		{HFFamilyNorm, Gemma1, "ffn_norm"},
		{HFFamilyNorm, Gemma2, "post_attention_norm"},
		{HFFamilyNorm, Gemma3, "post_attention_norm"},
		{HFFamilyNorm, "", ""},
		{"pre_feedforward_layernorm", Gemma1, ""},
		{"pre_feedforward_layernorm", Gemma2, "ffn_norm"},
		{"pre_feedforward_layernorm", "", "ffn_norm"},
		{"post_feedforward_layernorm", "", "post_ffw_norm"},
		{"self_attn.qkv_proj", Gemma1, ""},
		{"self_attn.q_proj.weight", Gemma1, ""},
	}
	for _, c := range layer {
		got, ok := HFLayerName(c.module, c.f)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("HFLayerName(%q, %q) = %q, %v; want %q", c.module, c.f, got, ok, c.want)
		}
	}

	global := map[string]string{
		"model.embed_tokens":                "token_embd",
		"model.language_model.embed_tokens": "token_embd",
		"language_model.model.norm":         "output_norm",
		"lm_head":                           "output",
		"language_model.lm_head":            "output",
		"model.lm_head":                     "",
		"embed_tokens":                      "",
		"model.layers.0.input_layernorm":    "",
	}
	for module, want := range global {
		if got, ok := HFGlobalName(module); got != want || ok != (want != "") {
			t.Errorf("HFGlobalName(%q) = %q, %v; want %q", module, got, ok, want)
		}
	}

	if rest, ok := CutHFTextPrefix("model.language_model.layers.3.mlp.up_proj.weight"); !ok || rest != "layers.3.mlp.up_proj.weight" {
		t.Errorf("CutHFTextPrefix = %q, %v", rest, ok)
	}
	if _, ok := CutHFTextPrefix("transformer.wte.weight"); ok {
		t.Error("CutHFTextPrefix accepted a non-Gemma name")
	}
	if !IsHFVision("model.vision_tower.vision_model.post_layernorm.weight") || IsHFVision("model.layers.0.mlp.up_proj.weight") {
		t.Error("IsHFVision")
	}

	// HFName inverts the mapping for every tensor of every family.
	for _, f := range []Family{Gemma1, Gemma2, Gemma3} {
		c := Config{Family: f, NumLayers: 2, Hidden: 8, FFN: 16, NumHeads: 2, NumKVHeads: 1, HeadDim: 4, Vocab: 10,
			QKNorm: f == Gemma3, PostNorms: f != Gemma1}
		for _, e := range ExpectedTensors(c) {
			hf, err := HFName(e.Name, f)
			if err != nil {
				t.Fatal(err)
			}
			module := hf[:len(hf)-len(".weight")]
			var back string
			if g, ok := HFGlobalName(module); ok {
				back = g + ".weight"
			} else if rest, ok := CutHFTextPrefix(module); ok && len(rest) > len("layers.1.") {
				n, ok := HFLayerName(rest[len("layers.1."):], f)
				if ok {
					back = "blk." + rest[len("layers."):len("layers.1.")] + n + ".weight"
				}
			}
			if back != e.Name {
				t.Errorf("%s: HFName gives %s, which maps back to %q", e.Name, hf, back)
			}
		}
	}
	if _, err := HFName("blk.0.post_ffw_norm.weight", Gemma1); err == nil {
		t.Error("HFName named a Gemma 2 norm in a Gemma 1 model")
	}
}

package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// writeShards writes two small shards and an index mapping tensor names to
// shard files as given (the index may disagree with the shards).
func writeShards(t *testing.T, index map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	src := func() *ir.Tensor {
		return &ir.Tensor{DType: ir.F32, Shape: []int64{2}, Source: bytes.NewReader(make([]byte, 8))}
	}
	a1, b1, c2 := src(), src(), src()
	a1.Name, b1.Name, c2.Name = "a", "b", "c"
	if err := Write(filepath.Join(dir, "s1.safetensors"), []*ir.Tensor{a1, b1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "s2.safetensors"), []*ir.Tensor{c2}, nil); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`{"metadata":{"total_size":24},"weight_map":{`)
	first := true
	for k, v := range index {
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + k + `":"` + v + `"`)
	}
	b.WriteString("}}")
	if err := os.WriteFile(filepath.Join(dir, indexFile), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestShards(t *testing.T) {
	good := map[string]string{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}
	dir := writeShards(t, good)
	m := &ir.Model{}
	var opened []string
	files, err := openShards(dir, true, m, func(p string) { opened = append(opened, filepath.Base(p)) })
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(files) != 2 || strings.Join(opened, ",") != indexFile+",s1.safetensors,s2.safetensors" {
		t.Fatalf("opened %v", opened)
	}

	cases := []struct {
		name  string
		index map[string]string
		want  []string
	}{
		{"missing shard", map[string]string{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "d": "s3.safetensors"},
			[]string{"lists shard s3.safetensors", "d", "cannot be opened"}},
		{"tensor missing from shard", map[string]string{"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "x": "s2.safetensors"},
			[]string{"lists tensor x in shard", "s2.safetensors", "no such tensor"}},
		{"tensor not in index", map[string]string{"a": "s1.safetensors", "c": "s2.safetensors"},
			[]string{"s1.safetensors", "tensor b", "file offset", "is not listed in"}},
		{"tensor in the wrong shard", map[string]string{"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"},
			[]string{"s1.safetensors: tensor b (file offset", "is listed in", "for shard s2.safetensors"}},
		{"path outside the directory", map[string]string{"a": "../s1.safetensors"},
			[]string{"tensor a maps to \"../s1.safetensors\""}},
		{"empty index", map[string]string{}, []string{"weight_map is empty"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeShards(t, c.index)
			m := &ir.Model{}
			_, err := openShards(dir, true, m, func(string) {})
			m.Close()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestShardsWithoutIndex(t *testing.T) {
	dir := writeShards(t, nil)
	os.Remove(filepath.Join(dir, indexFile))
	m := &ir.Model{}
	defer m.Close()
	_, err := openShards(dir, true, m, func(string) {})
	if err == nil || !strings.Contains(err.Error(), "found 2 .safetensors files, which need an index") {
		t.Fatalf("error %v", err)
	}
	os.Remove(filepath.Join(dir, "s2.safetensors"))
	if _, err := openShards(dir, true, m, func(string) {}); err != nil {
		t.Fatalf("a lone differently named file: %v", err)
	}
}

func TestMapName(t *testing.T) {
	g1 := ir.Config{Family: ir.Gemma1, NumLayers: 2, TiedEmbeddings: true}
	g2 := ir.Config{Family: ir.Gemma2, NumLayers: 2, TiedEmbeddings: true}
	g3 := ir.Config{Family: ir.Gemma3, NumLayers: 2}
	cases := []struct {
		hf   string
		c    ir.Config
		name string
		skip bool
		err  string
	}{
		{"model.embed_tokens.weight", g1, "token_embd.weight", false, ""},
		{"model.norm.weight", g1, "output_norm.weight", false, ""},
		{"model.layers.1.post_attention_layernorm.weight", g1, "blk.1.ffn_norm.weight", false, ""},
		{"model.layers.1.post_attention_layernorm.weight", g2, "blk.1.post_attention_norm.weight", false, ""},
		{"model.layers.0.pre_feedforward_layernorm.weight", g2, "blk.0.ffn_norm.weight", false, ""},
		{"model.layers.0.post_feedforward_layernorm.weight", g2, "blk.0.post_ffw_norm.weight", false, ""},
		{"model.layers.0.pre_feedforward_layernorm.weight", g1, "", false, "unknown per-layer tensor"},
		{"model.layers.0.self_attn.q_norm.weight", g3, "blk.0.attn_q_norm.weight", false, ""},
		{"model.layers.0.self_attn.o_proj.weight", g3, "blk.0.attn_output.weight", false, ""},
		{"language_model.model.layers.1.mlp.up_proj.weight", g3, "blk.1.ffn_up.weight", false, ""},
		{"model.language_model.embed_tokens.weight", g3, "token_embd.weight", false, ""},
		{"vision_tower.vision_model.post_layernorm.weight", g3, "", true, ""},
		{"model.multi_modal_projector.mm_input_projection_weight", g3, "", true, ""},
		{"lm_head.weight", g1, "", true, ""},
		{"lm_head.weight", g3, "output.weight", false, ""},
		{"model.layers.0.self_attn.rotary_emb.inv_freq", g1, "", true, ""},
		{"model.layers.2.mlp.up_proj.weight", g1, "", false, "layer 2, but the config has 2 layers"},
		{"model.layers.01.mlp.up_proj.weight", g1, "", false, "malformed layer number"},
		{"model.layers.-1.mlp.up_proj.weight", g1, "", false, "malformed layer number"},
		{"model.layers.0.mlp.up_proj.bias", g1, "", false, "unknown per-layer tensor"},
		{"transformer.wte.weight", g1, "", false, "not a Gemma text-model tensor name"},
	}
	for _, c := range cases {
		name, skip, err := MapName(c.hf, c.c)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.hf, err, c.err)
			}
			continue
		}
		if err != nil || name != c.name || (skip != "") != c.skip {
			t.Errorf("%s (%s): got %q skip %q err %v, want %q skip %v", c.hf, c.c.Family, name, skip, err, c.name, c.skip)
		}
		if name != "" && !strings.HasPrefix(c.hf, "language_model.") && !strings.HasPrefix(c.hf, "model.language_model.") {
			if back, err := HFName(name, c.c.Family); err != nil || back != c.hf {
				t.Errorf("HFName(%s) = %q, %v; want %q", name, back, err, c.hf)
			}
		}
	}
}

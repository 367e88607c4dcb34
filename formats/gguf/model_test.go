package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// tinyConfig is a small valid config of the family.
func tinyConfig(f ir.Family) ir.Config {
	c := ir.Config{
		Family: f, NumLayers: 3, Hidden: 32, FFN: 64, NumHeads: 2, NumKVHeads: 1, HeadDim: 16,
		Vocab: 11, ContextLength: 128, RMSNormEps: 1e-6, RopeBase: 10000, RopeBaseLocal: 10000,
		RopeScale: 1, QueryPreAttnScalar: 16, TiedEmbeddings: true,
	}
	switch f {
	case ir.Gemma2:
		c.SlidingWindow, c.AttnSoftcap, c.FinalSoftcap, c.PostNorms = 8, 50, 30, true
	case ir.Gemma3:
		c.SlidingWindow, c.PostNorms, c.QKNorm, c.RopeBase = 8, true, true, 1e6
	}
	c.Sliding = ir.DefaultSliding(f, c.NumLayers)
	return c
}

func tinyTokenizer() *ir.Tokenizer {
	t := &ir.Tokenizer{
		Model:  "llama",
		Pieces: []string{"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<0x00>", "<0x0A>", "▁", "a", "▁a"},
		BOS:    2, EOS: 1, UNK: 3, PAD: 0, EOT: 5, AddBOS: true,
		ByteFallback: true, SplitDigits: true, Normalizer: "identity",
	}
	t.Types = []ir.TokenType{3, 3, 3, 2, 4, 4, 6, 6, 1, 1, 1}
	t.Scores = []float32{0, 0, 0, 0, 0, 0, 0, 0, -1, -2, -3}
	return t
}

// tinyModel builds a model of the config with patterned F32 weights (F16
// for matrices when f16 is set).
func tinyModel(c ir.Config, f16 bool) *ir.Model {
	m := &ir.Model{Config: c, Tokenizer: tinyTokenizer()}
	for i, spec := range ir.ExpectedTensors(c) {
		t := &ir.Tensor{Name: spec.Name, DType: ir.F32, Shape: spec.Shape}
		if f16 && len(spec.Shape) > 1 {
			t.DType = ir.F16
		}
		t.Source = &memSource{data: patterned(int(t.Size()), byte(i))}
		m.Tensors = append(m.Tensors, t)
	}
	return m
}

func kvMap(kvs []ir.KV) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestModelRoundTrip(t *testing.T) {
	for _, fam := range []ir.Family{ir.Gemma1, ir.Gemma2, ir.Gemma3} {
		t.Run(string(fam), func(t *testing.T) {
			m := tinyModel(tinyConfig(fam), true)
			m.Extra = []ir.KV{{Key: "general.name", Value: "Tiny"}, {Key: "gemmaconv.source", Value: "test"}}
			dir := t.TempDir()
			p1 := filepath.Join(dir, "a.gguf")
			if err := Write(p1, m, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			back, err := OpenModel(p1)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			want := m.Config
			if !reflect.DeepEqual(back.Config, want) {
				t.Errorf("config:\n got %+v\nwant %+v", back.Config, want)
			}
			tok := back.Tokenizer
			wt := tinyTokenizer()
			if !reflect.DeepEqual(tok.Pieces, wt.Pieces) || !reflect.DeepEqual(tok.Scores, wt.Scores) {
				t.Error("vocabulary differs")
			}
			// user-defined pieces are written as NORMAL, as llama.cpp does
			if tok.Types[4] != ir.TokenNormal || tok.Types[3] != ir.TokenUnknown || tok.Types[6] != ir.TokenByte {
				t.Errorf("types %v", tok.Types)
			}
			if tok.BOS != 2 || tok.EOS != 1 || tok.PAD != 0 || tok.UNK != 3 || tok.EOT != 5 || !tok.AddBOS || tok.AddEOS || tok.AddSpacePrefix || !tok.ByteFallback || !tok.SplitDigits {
				t.Errorf("tokenizer settings %+v", *tok)
			}
			if back.Provenance.Format != "gguf" {
				t.Errorf("provenance %+v", back.Provenance)
			}
			if v, _ := back.Lookup("gemmaconv.source"); v != "test" {
				t.Errorf("extra key lost: %v", back.Extra)
			}
			if v, _ := back.Lookup("general.file_type"); v != uint32(1) {
				t.Errorf("general.file_type = %v, want 1 (F16)", v)
			}
			for _, tt := range back.Tensors {
				orig := m.Tensor(tt.Name)
				if orig == nil || tt.DType != orig.DType || !reflect.DeepEqual(tt.Shape, orig.Shape) {
					t.Fatalf("tensor %s differs", tt.Name)
				}
				buf := make([]byte, tt.Size())
				if err := tt.ReadRows(0, tt.Rows(), buf); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, orig.Source.(*memSource).data) {
					t.Errorf("tensor %s data differs", tt.Name)
				}
				tt.Release()
			}
			// Writing what we read reproduces the file exactly.
			p2 := filepath.Join(dir, "b.gguf")
			if err := Write(p2, back, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			x, _ := os.ReadFile(p1)
			y, _ := os.ReadFile(p2)
			if !bytes.Equal(x, y) {
				t.Error("GGUF -> IR -> GGUF changed the file")
			}
			// So does opening through the registry.
			rm, err := ir.Open(p1, ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rm.Close()
		})
	}
}

// TestNonDefaultConfig checks that hyperparameters llama.cpp would infer
// differently get their keys, only then, and read back.
func TestNonDefaultConfig(t *testing.T) {
	cases := []struct {
		name string
		fam  ir.Family
		edit func(c *ir.Config)
		keys map[string]any
	}{
		{"gemma2 query scalar", ir.Gemma2, func(c *ir.Config) { c.QueryPreAttnScalar = 24 }, map[string]any{"gemma2.attention.query_pre_attn_scalar": float32(24)}},
		{"gemma3 query scalar", ir.Gemma3, func(c *ir.Config) { c.QueryPreAttnScalar = 32 }, map[string]any{"gemma3.attention.query_pre_attn_scalar": float32(32)}},
		{"gemma1 query scalar", ir.Gemma1, func(c *ir.Config) { c.QueryPreAttnScalar = 8 }, map[string]any{"gemma.attention.query_pre_attn_scalar": float32(8)}},
		{"gemma2 period", ir.Gemma2, func(c *ir.Config) { c.Sliding = []bool{true, true, false} }, map[string]any{"gemma2.attention.sliding_window_pattern": uint32(3)}},
		{"gemma2 all global", ir.Gemma2, func(c *ir.Config) { c.Sliding = []bool{false, false, false} }, map[string]any{"gemma2.attention.sliding_window_pattern": uint32(1)}},
		{"gemma3 irregular", ir.Gemma3, func(c *ir.Config) { c.Sliding = []bool{false, true, true} }, map[string]any{"gemma3.attention.sliding_window_pattern": []bool{false, true, true}}},
		{"gemma2 all local", ir.Gemma2, func(c *ir.Config) { c.Sliding = []bool{true, true, true} }, map[string]any{"gemma2.attention.sliding_window_pattern": uint32(0)}},
		{"gemma3 all local (default for 3 layers)", ir.Gemma3, func(c *ir.Config) { c.Sliding = []bool{true, true, true} }, map[string]any{"gemma3.attention.sliding_window_pattern": nil}},
		{"gemma3 no sliding", ir.Gemma3, func(c *ir.Config) { c.Sliding = []bool{false, false, false}; c.SlidingWindow = 0 }, map[string]any{"gemma3.attention.sliding_window": nil}},
		{"gemma3 rope scaling", ir.Gemma3, func(c *ir.Config) { c.RopeScale = 8 }, map[string]any{"gemma3.rope.scaling.type": "linear", "gemma3.rope.scaling.factor": float32(8)}},
		{"gemma3 final softcap", ir.Gemma3, func(c *ir.Config) { c.FinalSoftcap = 30 }, map[string]any{"gemma3.final_logit_softcapping": float32(30)}},
		{"gemma2 rope", ir.Gemma2, func(c *ir.Config) { c.RopeBase, c.RopeBaseLocal, c.RopeScale = 20000, 5000, 2 }, map[string]any{
			"gemma2.rope.freq_base": float32(20000), "gemma2.rope.freq_base_swa": float32(5000), "gemma2.rope.scaling.type": "linear", "gemma2.rope.scaling.factor": float32(2)}},
		{"gemma1 rope", ir.Gemma1, func(c *ir.Config) { c.RopeBase, c.RopeBaseLocal = 500, 500 }, map[string]any{"gemma.rope.freq_base": float32(500), "gemma.rope.freq_base_swa": nil}},
		{"untied", ir.Gemma1, func(c *ir.Config) { c.TiedEmbeddings = false }, nil},
		{"stock gemma2", ir.Gemma2, func(c *ir.Config) {}, map[string]any{"gemma2.attention.query_pre_attn_scalar": nil, "gemma2.attention.sliding_window_pattern": nil, "gemma2.rope.freq_base": nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig(tc.fam)
			tc.edit(&c)
			m := tinyModel(c, false)
			kvs, err := Metadata(m)
			if err != nil {
				t.Fatal(err)
			}
			got := kvMap(kvs)
			for k, v := range tc.keys {
				g, ok := got[k]
				if v == nil {
					if ok {
						t.Errorf("%s written (%v)", k, g)
					}
					continue
				}
				if !reflect.DeepEqual(g, v) {
					t.Errorf("%s = %#v, want %#v", k, g, v)
				}
			}
			p := filepath.Join(t.TempDir(), "m.gguf")
			if err := Write(p, m, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			back, err := OpenModel(p)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			want := c
			if tc.name == "gemma3 no sliding" {
				want.SlidingWindow = 0
			}
			if !reflect.DeepEqual(back.Config, want) {
				t.Errorf("config read back:\n got %+v\nwant %+v", back.Config, want)
			}
		})
	}
}

func TestMetadataErrors(t *testing.T) {
	m := tinyModel(tinyConfig(ir.Gemma3), false)
	m.Config.NormOffset = 1
	if _, err := Metadata(m); err == nil || !strings.Contains(err.Error(), "WithNormOffset") {
		t.Errorf("NormOffset 1: %v", err)
	}
	m.Config.NormOffset = 0
	m.Extra = []ir.KV{{Key: "gemma3.block_count", Value: uint32(7)}}
	if _, err := Metadata(m); err == nil || !strings.Contains(err.Error(), "contradicts") {
		t.Errorf("contradicting extra: %v", err)
	}
	m.Extra = []ir.KV{{Key: "gemma3.block_count", Value: uint32(3)}, {Key: "general.file_type", Value: uint32(15)}, {Key: "tokenizer.chat_template", Value: "{{x}}"}}
	kvs, err := Metadata(m)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
	}
	if kvMap(kvs)["general.file_type"] != uint32(15) {
		t.Error("general.file_type from Extra not used")
	}
	i := strings.Index(strings.Join(keys, " "), "tokenizer.ggml.add_eos_token tokenizer.chat_template")
	if i < 0 {
		t.Errorf("chat template not after add_eos_token: %v", keys)
	}
	m.Extra = []ir.KV{{Key: "general.file_type", Value: 15}}
	if _, err := Metadata(m); err == nil {
		t.Error("int file type accepted")
	}
	m.Extra = nil
	m.Tokenizer = nil
	if _, err := Metadata(m); err == nil {
		t.Error("no tokenizer accepted")
	}
}

func TestVocabPadding(t *testing.T) {
	c := tinyConfig(ir.Gemma1)
	c.Vocab = 14 // 11 pieces
	m := tinyModel(c, false)
	kvs, err := Metadata(m)
	if err != nil {
		t.Fatal(err)
	}
	km := kvMap(kvs)
	toks := km["tokenizer.ggml.tokens"].([]string)
	if len(toks) != 14 || toks[11] != "[PAD11]" || toks[13] != "[PAD13]" {
		t.Errorf("tokens %q", toks)
	}
	if s := km["tokenizer.ggml.scores"].([]float32); s[12] != -10000 {
		t.Errorf("pad score %v", s[12])
	}
	if ty := km["tokenizer.ggml.token_type"].([]int32); ty[12] != int32(ir.TokenUnused) {
		t.Errorf("pad type %v", ty[12])
	}
	if km["tokenizer.ggml.eot_token_id"] != uint32(5) {
		t.Errorf("eot = %v", km["tokenizer.ggml.eot_token_id"])
	}
	if _, ok := km["tokenizer.ggml.unknown_token_id"]; ok {
		t.Error("unknown_token_id written")
	}
}

func TestOpenModelErrors(t *testing.T) {
	if _, err := OpenModel(filepath.Join("..", "..", "goldens", "gguf", "imatrix.gguf")); err == nil || !strings.Contains(err.Error(), "general.architecture") {
		t.Errorf("imatrix as a model: %v", err)
	}
	base := tinyModel(tinyConfig(ir.Gemma2), false)
	kvs, err := Metadata(base)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(key string, v any) []ir.KV {
		out := append([]ir.KV(nil), kvs...)
		for i := range out {
			if out[i].Key == key {
				if v == nil {
					return append(out[:i], out[i+1:]...)
				}
				out[i].Value = v
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		kvs  []ir.KV
		want string
	}{
		{"llama", edit("general.architecture", "llama"), "not a Gemma"},
		{"huge block count", edit("gemma2.block_count", uint32(1<<30)), "at least 9"},
		{"string block count", edit("gemma2.block_count", "3"), "want an integer"},
		{"missing eps", edit("gemma2.attention.layer_norm_rms_epsilon", nil), "required key"},
		{"value length", edit("gemma2.attention.value_length", uint32(8)), "one head size"},
		{"yarn", append(edit("", nil), ir.KV{Key: "gemma2.rope.scaling.type", Value: "yarn"}), "not supported"},
		{"short scores", edit("tokenizer.ggml.scores", []float32{1}), "float32s"},
		{"bad pattern", append(edit("", nil), ir.KV{Key: "gemma2.attention.sliding_window_pattern", Value: []bool{true}}), "entries for 3 layers"},
		{"wrong shape", edit("gemma2.embedding_length", uint32(64)), "shape"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "m.gguf")
			if err := WriteFile(p, c.kvs, base.Tensors, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			m, err := OpenModel(p)
			if err == nil {
				m.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not mention %q and the file", err, c.want)
			}
		})
	}
}

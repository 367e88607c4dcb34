package pytorch

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

// checkAgainstReference compares every tensor of m with the same tensor
// (by Hugging Face name, mapped with the safetensors reader's MapName) of
// a torch-saved reference file holding contiguous copies.
func checkAgainstReference(t *testing.T, m *ir.Model, refPath string) {
	t.Helper()
	_, ref, order := openFlat(t, refPath)
	seen := 0
	for _, hf := range order {
		name, skip, err := safetensors.MapName(hf, m.Config)
		if err != nil {
			t.Fatal(err)
		}
		if skip != "" {
			continue
		}
		x := m.Tensor(name)
		if x == nil {
			t.Fatalf("model has no %s (from %s)", name, hf)
		}
		seen++
		want := tensorBytes(t, ref[hf])
		if !bytes.Equal(readAll(t, x), want) {
			t.Errorf("%s: bytes differ from %s in the reference", name, hf)
		}
	}
	if seen != len(m.Tensors) {
		t.Errorf("compared %d tensors of %d", seen, len(m.Tensors))
	}
}

// TestHFLegacyBin: a Hugging Face pytorch_model.bin in the legacy format
// (torch.save(..., _use_new_zipfile_serialization=False)), opened as a
// directory and as a file.
func TestHFLegacyBin(t *testing.T) {
	dir := filepath.Join(goldens, "hf_legacy")
	for _, p := range []string{dir, filepath.Join(dir, "pytorch_model.bin")} {
		if !Detect(p) {
			t.Fatalf("Detect(%s) = false", p)
		}
		m, err := ir.Open(p, ir.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m.Provenance.Format != FormatName || m.Config.Family != ir.Gemma2 || m.Tokenizer != nil {
			t.Fatalf("format %s family %s", m.Provenance.Format, m.Config.Family)
		}
		if m.Tensor("blk.0.ffn_norm.weight") == nil || m.Tensor("blk.1.post_attention_norm.weight") == nil {
			t.Fatal("Gemma 2 norms not mapped")
		}
		for _, x := range m.Tensors {
			if x.DType != ir.BF16 {
				t.Fatalf("%s is %s, want BF16 kept", x.Name, x.DType)
			}
		}
		notes := strings.Join(m.Provenance.Notes, "\n")
		if !strings.Contains(notes, "rotary_emb.inv_freq") {
			t.Errorf("no note about the skipped rotary buffer: %s", notes)
		}
		checkAgainstReference(t, m, filepath.Join(dir, "reference.pt"))
		m.Close()
	}
	if _, err := Open(dir, ir.OpenOptions{Arch: ir.Gemma3}); err == nil || !strings.Contains(err.Error(), "gemma3 was requested") {
		t.Fatalf("arch mismatch: %v", err)
	}
	// A config whose vocab is smaller than the embedding: padding rows are
	// trimmed as a view (the first 30 rows of the same storage).
	small := filepath.Join(t.TempDir(), "config.json")
	cfgData, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	os.WriteFile(small, []byte(strings.Replace(string(cfgData), `"vocab_size": 32`, `"vocab_size": 30`, 1)), 0o644)
	m, err := Open(dir, ir.OpenOptions{ConfigPath: small})
	if err != nil {
		t.Fatal(err)
	}
	emb := m.Tensor("token_embd.weight")
	if emb.Shape[0] != 30 || !strings.Contains(strings.Join(m.Provenance.Notes, "\n"), "trimmed model.embed_tokens.weight from 32 to the vocab's 30 rows") {
		t.Fatalf("trim: shape %v notes %v", emb.Shape, m.Provenance.Notes)
	}
	_, ref, _ := openFlat(t, filepath.Join(dir, "reference.pt"))
	if !bytes.Equal(readAll(t, emb), tensorBytes(t, ref["model.embed_tokens.weight"])[:30*16*2]) {
		t.Fatal("trimmed embedding bytes differ")
	}
	m.Close()
	// A config of another family is refused by the tensors.
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(`{"model_type":"gemma","vocab_size":32,"hidden_size":16,"intermediate_size":32,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":8}`), 0o644)
	if _, err := Open(dir, ir.OpenOptions{ConfigPath: cfg}); err == nil || !strings.Contains(err.Error(), "but the tensors are those of gemma2") {
		t.Fatalf("family mismatch: %v", err)
	}
}

// TestHFSharded: zip-format float16 shards with an index, opened through
// the directory, the index and one shard.
func TestHFSharded(t *testing.T) {
	dir := filepath.Join(goldens, "hf_sharded")
	for _, p := range []string{dir, filepath.Join(dir, hfIndex), filepath.Join(dir, "pytorch_model-00002-of-00002.bin")} {
		m, err := ir.Open(p, ir.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Provenance.Files) < 4 {
			t.Errorf("files %v", m.Provenance.Files)
		}
		for _, x := range m.Tensors {
			if x.DType != ir.F16 {
				t.Fatalf("%s is %s, want F16 kept", x.Name, x.DType)
			}
		}
		checkAgainstReference(t, m, filepath.Join(dir, "reference.pt"))
		m.Close()
	}
	// An index that lists a tensor in the wrong shard.
	tmp := t.TempDir()
	for _, f := range []string{"config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		os.WriteFile(filepath.Join(tmp, f), b, 0o644)
	}
	idx, _ := os.ReadFile(filepath.Join(dir, hfIndex))
	bad := strings.Replace(string(idx), `"model.embed_tokens.weight": "pytorch_model-00001-of-00002.bin"`, `"model.embed_tokens.weight": "pytorch_model-00002-of-00002.bin"`, 1)
	if bad == string(idx) {
		t.Fatal("index edit did not apply")
	}
	os.WriteFile(filepath.Join(tmp, hfIndex), []byte(bad), 0o644)
	if _, err := Open(tmp, ir.OpenOptions{}); err == nil || !strings.Contains(err.Error(), "is listed in") {
		t.Fatalf("wrong shard: %v", err)
	}
	os.WriteFile(filepath.Join(tmp, hfIndex), []byte(`{"weight_map":{"x":"../../etc/passwd"}}`), 0o644)
	if _, err := Open(tmp, ir.OpenOptions{}); err == nil || !strings.Contains(err.Error(), "not a file beside the index") {
		t.Fatalf("escaping shard path: %v", err)
	}
}

// TestInt8Checkpoint: gemma_pytorch's int8 format (weight + per-row
// weight_scaler, fused qkv, a complex64 freqs_cis buffer) dequantizes to
// exactly what torch computes, weight.float() * scaler.float().
func TestInt8Checkpoint(t *testing.T) {
	m, err := Open(filepath.Join(goldens, "gemma1_int8.ckpt"), ir.OpenOptions{ConfigPath: filepath.Join(goldens, "gemma1_int8.config.json")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, want, order := openFlat(t, filepath.Join(goldens, "gemma1_int8.expected.pt"))
	if len(order) != len(m.Tensors) {
		t.Fatalf("%d tensors, expected %d", len(m.Tensors), len(order))
	}
	for _, name := range order {
		x := m.Tensor(name)
		if x == nil {
			t.Fatalf("no %s", name)
		}
		wantType := ir.F32
		if ir.IsNormWeight(name) {
			wantType = ir.BF16
		}
		if x.DType != wantType {
			t.Errorf("%s is %s, want %s", name, x.DType, wantType)
		}
		wb := tensorBytes(t, want[name])
		if !bytes.Equal(readAll(t, x), wb) {
			t.Errorf("%s differs from torch's dequantization", name)
		}
		// Unaligned reads of the dequantizing source.
		b := make([]byte, 7)
		if n, err := x.Source.ReadAt(b, 5); n != 7 || err != nil || !bytes.Equal(b, wb[5:12]) {
			t.Errorf("%s: unaligned read: %v", name, err)
		}
	}
	notes := strings.Join(m.Provenance.Notes, "\n")
	for _, s := range []string{"freqs_cis", "dequantized int8", "split 2 fused"} {
		if !strings.Contains(notes, s) {
			t.Errorf("notes lack %q: %s", s, notes)
		}
	}
}

// fakeParts builds parts with the shapes of a model, without data.
func fakeParts(layers, vocab, hidden, ffn, q, kv, headDim int, fused, qkNorm, sandwich bool) *parts {
	st := &Storage{Key: "0", Type: BFloat16, Numel: 1 << 40}
	ref := func(shape ...int) *part {
		s := make([]int64, len(shape))
		str := make([]int64, len(shape))
		acc := int64(1)
		for i := len(shape) - 1; i >= 0; i-- {
			s[i] = int64(shape[i])
			str[i] = acc
			acc *= int64(shape[i])
		}
		return &part{w: &TensorRef{Storage: st, DType: BFloat16, Shape: s, Stride: str}}
	}
	p := &parts{embed: ref(vocab, hidden), outNorm: ref(hidden), layers: map[int]map[string]*part{}}
	for i := 0; i < layers; i++ {
		l := map[string]*part{"attn_output": ref(hidden, q), "ffn_gate": ref(ffn, hidden), "ffn_up": ref(ffn, hidden),
			"ffn_down": ref(hidden, ffn), "attn_norm": ref(hidden), "post_attention_layernorm": ref(hidden)}
		if fused {
			l["qkv"] = ref(q+2*kv, hidden)
		} else {
			l["attn_q"], l["attn_k"], l["attn_v"] = ref(q, hidden), ref(kv, hidden), ref(kv, hidden)
		}
		if qkNorm {
			l["attn_q_norm"], l["attn_k_norm"] = ref(headDim), ref(headDim)
		}
		if sandwich {
			l["ffn_norm"], l["post_ffw_norm"] = ref(hidden), ref(hidden)
		}
		p.layers[i] = l
	}
	return p
}

// TestInferConfig: without a config.json the released sizes are
// recognized from shapes; anything else asks for --config.
func TestInferConfig(t *testing.T) {
	cases := []struct {
		p                *parts
		fam              ir.Family
		heads, kv, hd    int
		qscale           float64
		window, ctx      int
		ropeScale        float64
		wantErrSubstring string
	}{
		{fakeParts(18, 256000, 2048, 16384, 2048, 256, 0, true, false, false), ir.Gemma1, 8, 1, 256, 256, 0, 8192, 1, ""},
		{fakeParts(46, 256000, 4608, 36864, 4096, 2048, 0, true, false, true), ir.Gemma2, 32, 16, 128, 144, 4096, 8192, 1, ""},
		{fakeParts(62, 262144, 5376, 21504, 4096, 2048, 128, false, true, true), ir.Gemma3, 32, 16, 128, 168, 1024, 131072, 8, ""},
		{fakeParts(26, 262144, 1152, 6912, 1024, 256, 256, true, true, true), ir.Gemma3, 4, 1, 256, 256, 512, 32768, 1, ""},
		{fakeParts(4, 4096, 256, 1024, 256, 64, 0, true, false, false), "", 0, 0, 0, 0, 0, 0, 0, "pass --config"},
	}
	for i, c := range cases {
		cfg, note, err := inferConfig(c.p, nil)
		if c.wantErrSubstring != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErrSubstring) {
				t.Errorf("case %d: %v", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if cfg.Family != c.fam || cfg.NumHeads != c.heads || cfg.NumKVHeads != c.kv || cfg.HeadDim != c.hd ||
			cfg.QueryPreAttnScalar != c.qscale || cfg.SlidingWindow != c.window || cfg.ContextLength != c.ctx || cfg.RopeScale != c.ropeScale {
			t.Errorf("case %d: %+v", i, cfg)
		}
		if !strings.Contains(note, "inferred") {
			t.Errorf("case %d: note %q", i, note)
		}
	}
	// The tokenizer's size bounds the vocab when the embedding is padded.
	p := fakeParts(18, 256128, 2048, 16384, 2048, 256, 0, true, false, false)
	cfg, note, err := inferConfig(p, &ir.Tokenizer{Pieces: make([]string, 256000)})
	if err != nil || cfg.Vocab != 256000 || !strings.Contains(note, "256000 pieces") {
		t.Fatalf("padded embedding: %v %d %q", err, cfg.Vocab, note)
	}
}

// TestDetect covers what the format claims.
func TestDetect(t *testing.T) {
	for _, p := range []string{
		filepath.Join(goldens, "views", "zip.pt"), filepath.Join(goldens, "views", "legacy.pt"),
		filepath.Join(goldens, "gemma1_int8.ckpt"), filepath.Join(goldens, "hf_sharded"),
		filepath.Join(goldens, "hf_sharded", hfIndex),
	} {
		if !Detect(p) {
			t.Errorf("Detect(%s) = false", p)
		}
	}
	for _, p := range []string{filepath.Join(goldens, "pickles", "proto2.pkl"), goldens, filepath.Join(goldens, "README.md"), "/nonexistent"} {
		if Detect(p) {
			t.Errorf("Detect(%s) = true", p)
		}
	}
}

package safetensors_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/internal/testmodel"
	"github.com/gemmaconv/gemmaconv/ir"
)

var fixtureModels = []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"}

// fixtures returns the shared fixtures directory or skips the test.
func fixtures(t *testing.T) string {
	t.Helper()
	fx := os.Getenv("GEMMACONV_FIXTURES")
	if fx == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the Hugging Face fixture checkpoints live in the shared fixtures")
	}
	return fx
}

// synth writes a tiny synthetic checkpoint or skips when no tokenizer.model
// is available to testmodel.
func synth(t *testing.T, cfg ir.Config, dtype ir.DType) string {
	t.Helper()
	if _, err := testmodel.TokenizerPath(); err != nil {
		t.Skipf("GEMMACONV_FIXTURES not set and no goldens/tokenizer: synthetic checkpoints need a tokenizer.model (%v)", err)
	}
	dir := t.TempDir()
	if err := testmodel.WriteHF(dir, cfg, 7, dtype); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readAll(t *testing.T, tn *ir.Tensor) []byte {
	t.Helper()
	b := make([]byte, tn.Size())
	if _, err := tn.Source.ReadAt(b, 0); err != nil {
		t.Fatalf("tensor %s: %v", tn.Name, err)
	}
	return b
}

// TestFixtureModels opens each fixture through the format registry and
// checks the config field by field against its config.json, the tokenizer
// and the tensor set.
func TestFixtureModels(t *testing.T) {
	fx := fixtures(t)
	base := ir.Config{
		NumLayers: 4, Hidden: 256, FFN: 1024, NumHeads: 4, HeadDim: 64, Vocab: 4096, ContextLength: 1024,
		RMSNormEps: 1e-6, RopeBase: 10000, RopeBaseLocal: 10000, RopeScale: 1, QueryPreAttnScalar: 64,
		TiedEmbeddings: true, NormOffset: 1,
	}
	want := map[string]ir.Config{}
	// gemma1: MQA (1 kv head), no sliding window, no softcaps, query scale = head_dim.
	c := base
	c.Family, c.NumKVHeads, c.Sliding = ir.Gemma1, 1, []bool{false, false, false, false}
	want["gemma1-tiny"] = c
	// gemma2: GQA 4/2, softcaps 50/30, window 16, sliding on even layers from 0, sandwich norms.
	c = base
	c.Family, c.NumKVHeads, c.AttnSoftcap, c.FinalSoftcap, c.SlidingWindow = ir.Gemma2, 2, 50, 30, 16
	c.Sliding, c.PostNorms = []bool{true, false, true, false}, true
	want["gemma2-tiny"] = c
	// gemma3: 6 layers, 5 local + layer 5 global, rope 1e6 global / 1e4 local, QK norm, no softcaps.
	c = base
	c.Family, c.NumLayers, c.NumKVHeads, c.SlidingWindow, c.RopeBase = ir.Gemma3, 6, 2, 16, 1e6
	c.Sliding, c.PostNorms, c.QKNorm = []bool{true, true, true, true, true, false}, true, true
	want["gemma3-tiny"] = c

	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fx, name, "hf")
			m, err := ir.Open(dir, ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Provenance.Format != "safetensors" {
				t.Errorf("format %q", m.Provenance.Format)
			}
			if !reflect.DeepEqual(m.Config, want[name]) {
				t.Errorf("config\n got %+v\nwant %+v", m.Config, want[name])
			}
			if err := m.Validate(); err != nil {
				t.Error(err)
			}
			if got, exp := len(m.Tensors), len(ir.ExpectedTensors(m.Config)); got != exp {
				t.Errorf("%d tensors, want %d", got, exp)
			}
			for i, s := range ir.ExpectedTensors(m.Config) {
				if m.Tensors[i].Name != s.Name || m.Tensors[i].DType != ir.BF16 {
					t.Errorf("tensor %d: %s %s, want %s BF16", i, m.Tensors[i].Name, m.Tensors[i].DType, s.Name)
				}
			}
			tok := m.Tokenizer
			if tok == nil {
				t.Fatal("no tokenizer")
			}
			if len(tok.Pieces) != 4096 || len(tok.Scores) != 4096 || len(tok.Types) != 4096 {
				t.Errorf("vocabulary of %d/%d/%d", len(tok.Pieces), len(tok.Scores), len(tok.Types))
			}
			if tok.PAD != 0 || tok.EOS != 1 || tok.BOS != 2 || tok.UNK != 3 || tok.EOT != 7 || !tok.AddBOS || tok.AddEOS || tok.AddSpacePrefix {
				t.Errorf("tokenizer specials: pad %d eos %d bos %d unk %d eot %d addBOS %v addEOS %v spacePrefix %v",
					tok.PAD, tok.EOS, tok.BOS, tok.UNK, tok.EOT, tok.AddBOS, tok.AddEOS, tok.AddSpacePrefix)
			}
			if tok.Pieces[2] != "<bos>" || tok.Types[2] != ir.TokenControl {
				t.Errorf("piece 2 = %q type %d", tok.Pieces[2], tok.Types[2])
			}
			var sawWeights bool
			for _, f := range m.Provenance.Files {
				if strings.HasSuffix(f, ".safetensors") {
					sawWeights = true
				}
			}
			if !sawWeights || !slices.Contains(m.Provenance.Files, filepath.Join(dir, "config.json")) {
				t.Errorf("provenance files %v", m.Provenance.Files)
			}
		})
	}
}

// llamaCppRef is the part of a fixture's llamacpp.json this test uses.
type llamaCppRef struct {
	Convert map[string]struct {
		Tensors []struct {
			Name   string  `json:"name"`
			Type   string  `json:"type"`
			Shape  []int64 `json:"shape"`
			SHA256 string  `json:"sha256"`
		} `json:"tensors"`
		KV map[string]struct {
			Len    int    `json:"len"`
			SHA256 string `json:"sha256"`
		} `json:"kv"`
	} `json:"convert"`
}

// TestFixtureMatchesLlamaCpp checks the name mapping and the tokenizer
// against what llama.cpp's convert_hf_to_gguf.py made of the same
// checkpoints: every tensor's bytes (norms as llama.cpp's F32 1+w), and the
// token, score and type arrays.
func TestFixtureMatchesLlamaCpp(t *testing.T) {
	fx := fixtures(t)
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(fx, name, "llamacpp.json"))
			if err != nil {
				t.Fatal(err)
			}
			var ref llamaCppRef
			if err := json.Unmarshal(raw, &ref); err != nil {
				t.Fatal(err)
			}
			conv := ref.Convert["bf16"]
			m, err := safetensors.OpenHF(filepath.Join(fx, name, "hf"), ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if len(conv.Tensors) != len(m.Tensors) {
				t.Errorf("%d tensors, llama.cpp has %d", len(m.Tensors), len(conv.Tensors))
			}
			for _, rt := range conv.Tensors {
				tn := m.Tensor(rt.Name)
				if tn == nil {
					t.Errorf("no tensor %s", rt.Name)
					continue
				}
				data := readAll(t, tn)
				if ir.IsNormWeight(tn.Name) {
					vals := make([]float32, tn.NumElements())
					ir.DecodeFloats(tn.DType, data, vals)
					for i := range vals {
						vals[i]++
					}
					data = make([]byte, 4*len(vals))
					ir.EncodeF32(vals, data)
				}
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != rt.SHA256 {
					t.Errorf("tensor %s: bytes differ from llama.cpp's", rt.Name)
				}
				if rt.Shape[0] != tn.Cols() {
					t.Errorf("tensor %s: ne[0] %d, our innermost dim %d", rt.Name, rt.Shape[0], tn.Cols())
				}
			}
			tok := m.Tokenizer
			var toks, scores, types []byte
			for i := range tok.Pieces {
				toks = append(toks, tok.Pieces[i]...)
				scores = binary.LittleEndian.AppendUint32(scores, math.Float32bits(tok.Scores[i]))
				// llama.cpp types SentencePiece's USER_DEFINED pieces NORMAL
				// when tokenizer_config.json has no added_tokens_decoder (it
				// tests only unknown/control/unused/byte); the IR keeps
				// SentencePiece's types, which encoding depends on.
				typ := tok.Types[i]
				if typ == ir.TokenUserDefined {
					typ = ir.TokenNormal
				}
				types = binary.LittleEndian.AppendUint32(types, uint32(typ))
			}
			for key, b := range map[string][]byte{"tokenizer.ggml.tokens": toks, "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types} {
				sum := sha256.Sum256(b)
				if kv := conv.KV[key]; kv.Len != len(tok.Pieces) || kv.SHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("%s differs from llama.cpp's (len %d vs %d)", key, len(tok.Pieces), kv.Len)
				}
			}
		})
	}
}

// TestFixtureRoundTrip: HF → IR → Write → Open gives the same names and
// bytes, both as a bare tensor file with canonical names and as a full
// checkpoint with Hugging Face names. The rewritten data section is also
// byte-identical to the fixture's (same tensor order).
func TestFixtureRoundTrip(t *testing.T) {
	fx := fixtures(t)
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(fx, name, "hf")
			m, err := safetensors.OpenHF(src, ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			out := t.TempDir()

			// Canonical names, one file.
			flat := filepath.Join(out, "flat.safetensors")
			if err := safetensors.Write(flat, m.Tensors, map[string]string{"format": "gguf-names"}); err != nil {
				t.Fatal(err)
			}
			f, err := safetensors.Open(flat)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if len(f.Tensors) != len(m.Tensors) || f.Metadata["format"] != "gguf-names" {
				t.Fatalf("%d tensors, metadata %v", len(f.Tensors), f.Metadata)
			}
			for _, tn := range m.Tensors {
				back, err := f.Tensor(tn.Name)
				if err != nil {
					t.Fatal(err)
				}
				if back.DType != tn.DType || !slices.Equal(back.Shape, tn.Shape) || !bytes.Equal(readAll(t, back), readAll(t, tn)) {
					t.Errorf("tensor %s differs after the round trip", tn.Name)
				}
			}

			// Hugging Face names, a whole checkpoint.
			ck := filepath.Join(out, "hf")
			os.Mkdir(ck, 0o755)
			var hf []*ir.Tensor
			for _, tn := range m.Tensors {
				n, err := safetensors.HFName(tn.Name, m.Config.Family)
				if err != nil {
					t.Fatal(err)
				}
				c := *tn
				c.Name = n
				hf = append(hf, &c)
			}
			if err := safetensors.Write(filepath.Join(ck, "model.safetensors"), hf, map[string]string{"format": "pt"}); err != nil {
				t.Fatal(err)
			}
			for _, fn := range []string{"config.json", "tokenizer.model", "tokenizer_config.json"} {
				b, err := os.ReadFile(filepath.Join(src, fn))
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(ck, fn), b, 0o644)
			}
			m2, err := safetensors.OpenHF(ck, ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m2.Close()
			if !reflect.DeepEqual(m2.Config, m.Config) || !reflect.DeepEqual(m2.Tokenizer, m.Tokenizer) {
				t.Errorf("config or tokenizer changed in the round trip")
			}
			if len(m2.Tensors) != len(m.Tensors) {
				t.Fatalf("%d tensors, want %d", len(m2.Tensors), len(m.Tensors))
			}
			for i, tn := range m.Tensors {
				t2 := m2.Tensors[i]
				if t2.Name != tn.Name || t2.DType != tn.DType || !slices.Equal(t2.Shape, tn.Shape) || !bytes.Equal(readAll(t, t2), readAll(t, tn)) {
					t.Errorf("tensor %s differs after the round trip", tn.Name)
				}
			}

			// Single-file fixtures: the data section matches the original.
			orig := filepath.Join(src, "model.safetensors")
			if _, err := os.Stat(orig); err == nil {
				a, _ := safetensors.Open(orig)
				b, _ := safetensors.Open(filepath.Join(ck, "model.safetensors"))
				defer a.Close()
				defer b.Close()
				if !slices.Equal(a.Names(), b.Names()) {
					t.Errorf("tensor order differs from the fixture's")
				}
				da, _ := os.ReadFile(orig)
				db, _ := os.ReadFile(filepath.Join(ck, "model.safetensors"))
				if !bytes.Equal(da[a.DataOffset():], db[b.DataOffset():]) {
					t.Errorf("data section differs from the fixture's")
				}
			}
		})
	}
}

// TestSingleFile opens a lone .safetensors file: config and tokenizer come
// from beside it or from the options.
func TestSingleFile(t *testing.T) {
	fx := fixtures(t)
	src := filepath.Join(fx, "gemma1-tiny", "hf")
	dir := t.TempDir()
	file := filepath.Join(dir, "weights.safetensors")
	if err := os.Symlink(filepath.Join(src, "model.safetensors"), file); err != nil {
		t.Fatal(err)
	}
	if !safetensors.Detect(file) {
		t.Fatal("Detect rejects a valid single file")
	}
	_, err := ir.Open(file, ir.OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), "no config.json beside the weights") {
		t.Fatalf("want a missing-config error, got %v", err)
	}
	m, err := ir.Open(file, ir.OpenOptions{ConfigPath: filepath.Join(src, "config.json"), TokenizerPath: filepath.Join(src, "tokenizer.model")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config.Family != ir.Gemma1 || len(m.Tensors) != len(ir.ExpectedTensors(m.Config)) {
		t.Errorf("family %s, %d tensors", m.Config.Family, len(m.Tensors))
	}
	if _, err := ir.Open(file, ir.OpenOptions{ConfigPath: filepath.Join(src, "config.json"), TokenizerPath: filepath.Join(src, "tokenizer.model"), Arch: ir.Gemma2}); err == nil {
		t.Error("a gemma config opened as gemma2")
	}
}

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	if safetensors.Detect(dir) {
		t.Error("empty directory detected")
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	if safetensors.Detect(dir) {
		t.Error("directory without weights detected")
	}
	os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("x"), 0o644)
	if !safetensors.Detect(dir) {
		t.Error("checkpoint directory not detected")
	}
	gguf := filepath.Join(dir, "model.gguf")
	os.WriteFile(gguf, []byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), 0o644)
	if safetensors.Detect(gguf) {
		t.Error("GGUF file detected as safetensors")
	}
}

// TestSynthetic opens testmodel checkpoints of every family and dtype.
func TestSynthetic(t *testing.T) {
	for _, fam := range []ir.Family{ir.Gemma1, ir.Gemma2, ir.Gemma3} {
		for _, dt := range []ir.DType{ir.F32, ir.F16, ir.BF16} {
			cfg := testmodel.TinyConfig(fam)
			dir := synth(t, cfg, dt)
			m, err := safetensors.OpenHF(dir, ir.OpenOptions{})
			if err != nil {
				t.Fatalf("%s %s: %v", fam, dt, err)
			}
			if !reflect.DeepEqual(m.Config, cfg) {
				t.Errorf("%s %s: config\n got %+v\nwant %+v", fam, dt, m.Config, cfg)
			}
			for _, tn := range m.Tensors {
				if tn.DType != dt {
					t.Errorf("%s: tensor %s is %s", dt, tn.Name, tn.DType)
				}
			}
			m.Close()
		}
	}
}

// TestVocabPadding: a config vocabulary larger than the tokenizer is
// padded as llama.cpp pads it; tokenizer_config.json's added tokens and
// flags apply.
func TestVocabPadding(t *testing.T) {
	cfg := testmodel.TinyConfig(ir.Gemma3)
	cfg.Vocab = 4100
	dir := synth(t, cfg, ir.BF16)
	tc := `{"add_bos_token": false, "add_eos_token": true, "bos_token": "<bos>",
	  "added_tokens_decoder": {
	    "6": {"content": "<start_of_turn>", "special": true},
	    "5": {"content": "[@EOS@]", "special": true},
	    "4097": {"content": "<image_soft_token>", "special": true},
	    "4098": {"content": "\u2581x\u2581", "special": false},
	    "4099": {"content": "<unused9>", "special": false},
	    "5000": {"content": "<far>", "special": true}}}`
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(tc), 0o644)
	m, err := safetensors.OpenHF(dir, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := m.Tokenizer
	if len(tok.Pieces) != 4100 {
		t.Fatalf("%d pieces", len(tok.Pieces))
	}
	check := func(id int, piece string, score float32, typ ir.TokenType) {
		t.Helper()
		if tok.Pieces[id] != piece || tok.Scores[id] != score || tok.Types[id] != typ {
			t.Errorf("token %d = %q %v %d, want %q %v %d", id, tok.Pieces[id], tok.Scores[id], tok.Types[id], piece, score, typ)
		}
	}
	check(5, "[@BOS@]", 0, ir.TokenUserDefined)
	check(6, "<start_of_turn>", 0, ir.TokenUserDefined)
	check(4096, "[PAD4096]", -10000, ir.TokenUnused)
	check(4097, "<image_soft_token>", -1000, ir.TokenControl)
	check(4098, " x ", -1000, ir.TokenUserDefined)
	check(4099, "<unused9>", -1000, ir.TokenControl)
	if tok.AddBOS || !tok.AddEOS {
		t.Errorf("AddBOS %v AddEOS %v, want false true", tok.AddBOS, tok.AddEOS)
	}
	joined := strings.Join(m.Provenance.Notes, "\n")
	if !strings.Contains(joined, "padded the vocabulary from 4096 to 4100") || !strings.Contains(joined, `"<far>" with id 5000`) ||
		!strings.Contains(joined, `kept SentencePiece piece "[@BOS@]" for id 5, not "[@EOS@]"`) || strings.Contains(joined, "<start_of_turn>") {
		t.Errorf("notes %q", m.Provenance.Notes)
	}
}

// rawTensor is a tensor of any safetensors dtype, for hostile checkpoints.
type rawTensor struct {
	name, dtype string
	shape       []int64
	data        []byte
}

// rewrite replaces a synthetic checkpoint's model.safetensors with its
// tensors renamed by rename ("" drops one) plus extra tensors, serialized
// by hand so that any dtype can appear.
func rewrite(t *testing.T, dir string, rename func(string) string, extra ...rawTensor) {
	t.Helper()
	p := filepath.Join(dir, "model.safetensors")
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	var ts []rawTensor
	for _, ti := range f.Tensors {
		data := make([]byte, ti.Size())
		if _, err := f.Window(ti).ReadAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if n := rename(ti.Name); n != "" {
			ts = append(ts, rawTensor{n, ti.DType, ti.Shape, data})
		}
	}
	f.Close()
	ts = append(ts, extra...)
	hdr := map[string]any{}
	var body []byte
	for _, r := range ts {
		hdr[r.name] = map[string]any{"dtype": r.dtype, "shape": r.shape, "data_offsets": []int{len(body), len(body) + len(r.data)}}
		body = append(body, r.data...)
	}
	h, _ := json.Marshal(hdr)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(append(out, h...), body...)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMultimodal: Gemma 3 vision-language checkpoints (either prefix
// style) yield the text model, the vision tensors noted as skipped.
func TestMultimodal(t *testing.T) {
	for _, prefix := range []string{"language_model.model.", "model.language_model."} {
		cfg := testmodel.TinyConfig(ir.Gemma3)
		dir := synth(t, cfg, ir.BF16)
		vis := prefix[:strings.Index(prefix, "language_model")]
		rewrite(t, dir, func(n string) string { return prefix + strings.TrimPrefix(n, "model.") },
			rawTensor{vis + "vision_tower.vision_model.post_layernorm.weight", "F32", []int64{4}, make([]byte, 16)},
			rawTensor{vis + "multi_modal_projector.mm_input_projection_weight", "I8", []int64{8}, make([]byte, 8)},
		)
		text, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		mm := `{"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": ` + string(text) + `, "vision_config": {"model_type": "siglip_vision_model"}}`
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(mm), 0o644)
		m, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err != nil {
			t.Fatalf("%s: %v", prefix, err)
		}
		if !reflect.DeepEqual(m.Config, cfg) || len(m.Tensors) != len(ir.ExpectedTensors(cfg)) {
			t.Errorf("%s: config %+v, %d tensors", prefix, m.Config, len(m.Tensors))
		}
		if !strings.Contains(strings.Join(m.Provenance.Notes, "\n"), "skipped 2 vision tensors") {
			t.Errorf("%s: notes %q", prefix, m.Provenance.Notes)
		}
		m.Close()
	}
}

// TestHFErrors: checkpoints with foreign or malformed tensors fail with
// errors naming the tensor and file.
func TestHFErrors(t *testing.T) {
	cfg := testmodel.TinyConfig(ir.Gemma1)
	t.Run("unknown tensor", func(t *testing.T) {
		dir := synth(t, cfg, ir.BF16)
		rewrite(t, dir, func(n string) string { return n },
			rawTensor{"model.layers.0.mlp.up_proj.bias", "BF16", []int64{128}, make([]byte, 256)})
		_, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err == nil || !strings.Contains(err.Error(), "model.layers.0.mlp.up_proj.bias") || !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), "file offset") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("unsupported dtype", func(t *testing.T) {
		dir := synth(t, cfg, ir.BF16)
		rewrite(t, dir, func(n string) string {
			if n == "model.embed_tokens.weight" {
				return ""
			}
			return n
		}, rawTensor{"model.embed_tokens.weight", "I8", []int64{4096, 64}, make([]byte, 4096*64)})
		_, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err == nil || !strings.Contains(err.Error(), "unsupported dtype") || !strings.Contains(err.Error(), "model.embed_tokens.weight") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("missing tensor", func(t *testing.T) {
		dir := synth(t, cfg, ir.BF16)
		rewrite(t, dir, func(n string) string {
			if n == "model.layers.1.self_attn.k_proj.weight" {
				return ""
			}
			return n
		})
		_, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err == nil || !strings.Contains(err.Error(), "blk.1.attn_k.weight is missing") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("tied lm_head and rotary buffer", func(t *testing.T) {
		dir := synth(t, cfg, ir.BF16)
		rewrite(t, dir, func(n string) string { return n },
			rawTensor{"lm_head.weight", "BF16", []int64{4096, 64}, make([]byte, 4096*64*2)},
			rawTensor{"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", []int64{8}, make([]byte, 32)})
		m, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if m.Tensor("output.weight") != nil || len(m.Provenance.Notes) != 2 {
			t.Errorf("notes %q", m.Provenance.Notes)
		}
	})
	t.Run("untied", func(t *testing.T) {
		c := cfg
		c.TiedEmbeddings = false
		dir := synth(t, c, ir.BF16)
		m, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if m.Tensor("output.weight") == nil || m.Tensors[len(m.Tensors)-1].Name != "output.weight" {
			t.Error("no output.weight for an untied model")
		}
	})
	t.Run("missing tokenizer", func(t *testing.T) {
		dir := synth(t, cfg, ir.BF16)
		os.Remove(filepath.Join(dir, "tokenizer.model"))
		_, err := safetensors.OpenHF(dir, ir.OpenOptions{})
		if err == nil || !strings.Contains(err.Error(), "no tokenizer.model") {
			t.Fatalf("error %v", err)
		}
	})
}

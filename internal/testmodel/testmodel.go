// Package testmodel synthesizes Gemma-shaped Hugging Face checkpoints of
// any size for tests and benchmarks: config.json, model.safetensors with
// seeded random weights, tokenizer.model and tokenizer_config.json. Weights
// are generated on the fly while the file is written, so a multi-gigabyte
// model needs only a few megabytes of memory.
package testmodel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"

	"github.com/x448/float16"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

// Weight distributions: matrices ~ N(0, WeightStd); norm weights (stored
// as w with the model computing x*(1+w)) ~ N(0, NormStd), so every norm
// is close to the identity.
const (
	WeightStd = 0.02
	NormStd   = 0.05
)

// Gemma2BConfig returns the configuration of Gemma 1 2B: 18 layers, hidden
// 2048, feed-forward 16384, 8 query heads sharing 1 key/value head of
// dimension 256, and a 256,000-token vocabulary.
func Gemma2BConfig() ir.Config {
	return ir.Config{
		Family:             ir.Gemma1,
		NumLayers:          18,
		Hidden:             2048,
		FFN:                16384,
		NumHeads:           8,
		NumKVHeads:         1,
		HeadDim:            256,
		Vocab:              256000,
		ContextLength:      8192,
		RMSNormEps:         1e-6,
		RopeBase:           10000,
		RopeBaseLocal:      10000,
		RopeScale:          1,
		Sliding:            make([]bool, 18),
		QueryPreAttnScalar: 256,
		TiedEmbeddings:     true,
		NormOffset:         1,
	}
}

// TinyConfig returns a small valid config of family f (hidden 64, two
// layers, or six for Gemma 3 so that one is global; vocab 4096, the size of
// the fixture tokenizer) for tests that need a model of each family.
func TinyConfig(f ir.Family) ir.Config {
	c := ir.Config{
		Family: f, NumLayers: 2, Hidden: 64, FFN: 128, NumHeads: 4, NumKVHeads: 2, HeadDim: 16,
		Vocab: 4096, ContextLength: 512, RMSNormEps: 1e-6, RopeBase: 10000, RopeBaseLocal: 10000,
		RopeScale: 1, QueryPreAttnScalar: 16, TiedEmbeddings: true, NormOffset: 1,
	}
	switch f {
	case ir.Gemma1:
		c.NumKVHeads = 1
	case ir.Gemma2:
		c.SlidingWindow, c.AttnSoftcap, c.FinalSoftcap, c.PostNorms = 16, 50, 30, true
	case ir.Gemma3:
		c.NumLayers, c.SlidingWindow, c.RopeBase, c.PostNorms, c.QKNorm = 6, 16, 1e6, true, true
	}
	c.Sliding = ir.DefaultSliding(f, c.NumLayers)
	return c
}

// WriteHF writes a Hugging Face checkpoint for cfg into dir (created if
// needed): config.json, model.safetensors holding random weights of type
// dtype (F32, F16 or BF16) drawn from a generator seeded with seed,
// tokenizer.model and tokenizer_config.json. Output is deterministic for a
// given (cfg, seed, dtype). The tokenizer is the project's fixture
// SentencePiece model (goldens/tokenizer/tokenizer.model, else
// $GEMMACONV_FIXTURES/tokenizer/tokenizer.model); readers pad its 4096
// pieces up to cfg.Vocab. cfg must be expressible as a Hugging Face
// config: the file written is read back with ir.ConfigFromHF and must
// reproduce cfg (NormOffset aside, which is always 1 for Hugging Face).
func WriteHF(dir string, cfg ir.Config, seed int64, dtype ir.DType) error {
	if err := WriteHFConfig(dir, cfg, dtype); err != nil {
		return err
	}
	canon, err := Tensors(cfg, seed, dtype)
	if err != nil {
		return err
	}
	tensors := make([]*ir.Tensor, len(canon))
	for i, t := range canon {
		name, err := safetensors.HFName(t.Name, cfg.Family)
		if err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		tt := *t
		tt.Name = name
		tensors[i] = &tt
	}
	return safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"})
}

// checkDType accepts the weight types the generators can write.
func checkDType(dtype ir.DType) error {
	switch dtype {
	case ir.F32, ir.F16, ir.BF16:
		return nil
	}
	return fmt.Errorf("testmodel: dtype %s: only F32, F16 and BF16 checkpoints can be written", dtype)
}

// WriteHFConfig writes everything of WriteHF's checkpoint but the weights
// into dir (created if needed): config.json, tokenizer.model and
// tokenizer_config.json. The other generators' checkpoints carry no
// config, so tests and benchmarks pass these files as --config and
// --tokenizer.
func WriteHFConfig(dir string, cfg ir.Config, dtype ir.DType) error {
	if err := checkDType(dtype); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	cfgJSON, err := hfConfigJSON(cfg, dtype)
	if err != nil {
		return err
	}
	back, err := ir.ConfigFromHF(cfgJSON)
	if err != nil {
		return fmt.Errorf("testmodel: generated config.json does not parse: %w", err)
	}
	want := cfg
	want.NormOffset = back.NormOffset
	if !reflect.DeepEqual(back, want) {
		return fmt.Errorf("testmodel: config cannot be expressed as a Hugging Face config.json: wrote %+v, reads back as %+v", want, back)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfgJSON, 0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	tokSrc, err := TokenizerPath()
	if err != nil {
		return err
	}
	if err := copyFile(tokSrc, filepath.Join(dir, "tokenizer.model")); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	tc := []byte(`{
  "add_bos_token": true,
  "add_eos_token": false,
  "bos_token": "<bos>",
  "eos_token": "<eos>",
  "pad_token": "<pad>",
  "unk_token": "<unk>",
  "tokenizer_class": "GemmaTokenizer",
  "model_max_length": ` + strconv.Itoa(cfg.ContextLength) + `
}
`)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tc, 0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	return nil
}

// Tensors returns the model's weights for (cfg, seed, dtype) as lazy
// canonical tensors (GGUF names, ir.ExpectedTensors order, IR shapes),
// each a *RandomSource. These are the values WriteHF writes; every
// generator in this package writes the same ones, so checkpoints of one
// (cfg, seed, dtype) in different formats hold identical weights.
func Tensors(cfg ir.Config, seed int64, dtype ir.DType) ([]*ir.Tensor, error) {
	if err := checkDType(dtype); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("testmodel: %w", err)
	}
	var tensors []*ir.Tensor
	for i, s := range ir.ExpectedTensors(cfg) {
		std, mean := float32(WeightStd), float32(0)
		if ir.IsNormWeight(s.Name) {
			std = NormStd
		}
		cols := s.Shape[len(s.Shape)-1]
		rows := int64(1)
		for _, d := range s.Shape[:len(s.Shape)-1] {
			rows *= d
		}
		tensors = append(tensors, &ir.Tensor{Name: s.Name, DType: dtype, Shape: s.Shape, Source: &RandomSource{
			DType: dtype, Rows: rows, Cols: cols, Seed: uint64(seed), Stream: uint64(i), Std: std, Mean: mean,
		}})
	}
	return tensors, nil
}

// TokenizerPath returns the SentencePiece model WriteHF copies: the
// project's goldens/tokenizer/tokenizer.model if present, else the shared
// fixture named by GEMMACONV_FIXTURES.
func TokenizerPath() (string, error) {
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "..", "goldens", "tokenizer", "tokenizer.model")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	if fx := os.Getenv("GEMMACONV_FIXTURES"); fx != "" {
		p := filepath.Join(fx, "tokenizer", "tokenizer.model")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	} else {
		tried = append(tried, "$GEMMACONV_FIXTURES/tokenizer/tokenizer.model (GEMMACONV_FIXTURES not set)")
	}
	return "", fmt.Errorf("testmodel: no tokenizer.model found (tried %v)", tried)
}

// hfConfigJSON renders cfg as the config.json transformers writes for the
// family, listing layer_types explicitly so any sliding pattern survives.
func hfConfigJSON(c ir.Config, dtype ir.DType) ([]byte, error) {
	type kv struct {
		k string
		v any
	}
	// float32 hyperparameters are written in their shortest float32 form
	// so that they parse back to the same float32.
	f32 := func(v float32) json.Number { return json.Number(strconv.FormatFloat(float64(v), 'g', -1, 32)) }
	softcap := func(v float32) any {
		if v == 0 {
			return nil
		}
		return f32(v)
	}
	torchDType := map[ir.DType]string{ir.F32: "float32", ir.F16: "float16", ir.BF16: "bfloat16"}[dtype]
	var modelType, arch string
	switch c.Family {
	case ir.Gemma1:
		modelType, arch = "gemma", "GemmaForCausalLM"
	case ir.Gemma2:
		modelType, arch = "gemma2", "Gemma2ForCausalLM"
	case ir.Gemma3:
		modelType, arch = "gemma3_text", "Gemma3ForCausalLM"
	}
	fields := []kv{
		{"architectures", []string{arch}},
		{"model_type", modelType},
		{"vocab_size", c.Vocab},
		{"hidden_size", c.Hidden},
		{"intermediate_size", c.FFN},
		{"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads},
		{"num_key_value_heads", c.NumKVHeads},
		{"head_dim", c.HeadDim},
		{"rms_norm_eps", f32(c.RMSNormEps)},
		{"max_position_embeddings", c.ContextLength},
		{"rope_theta", c.RopeBase},
		{"hidden_activation", "gelu_pytorch_tanh"},
		{"hidden_act", "gelu_pytorch_tanh"},
		{"pad_token_id", 0},
		{"eos_token_id", 1},
		{"bos_token_id", 2},
		{"tie_word_embeddings", c.TiedEmbeddings},
		{"torch_dtype", torchDType},
	}
	if c.Family != ir.Gemma1 {
		types := make([]string, len(c.Sliding))
		for i, s := range c.Sliding {
			types[i] = "full_attention"
			if s {
				types[i] = "sliding_attention"
			}
		}
		fields = append(fields,
			kv{"query_pre_attn_scalar", c.QueryPreAttnScalar},
			kv{"sliding_window", c.SlidingWindow},
			kv{"layer_types", types},
			kv{"attn_logit_softcapping", softcap(c.AttnSoftcap)},
			kv{"final_logit_softcapping", softcap(c.FinalSoftcap)},
		)
	}
	if c.Family == ir.Gemma3 {
		fields = append(fields, kv{"rope_local_base_freq", c.RopeBaseLocal})
		if c.RopeScale != 1 {
			fields = append(fields, kv{"rope_scaling", map[string]any{"rope_type": "linear", "factor": c.RopeScale}})
		} else {
			fields = append(fields, kv{"rope_scaling", nil})
		}
	}
	// Write keys in a fixed order (encoding/json sorts map keys, which would
	// do too, but this order reads like transformers' files).
	out := []byte("{\n")
	for i, f := range fields {
		v, err := json.Marshal(f.v)
		if err != nil {
			return nil, fmt.Errorf("testmodel: config %s: %w", f.k, err)
		}
		out = append(out, "  "...)
		out = strconv.AppendQuote(out, f.k)
		out = append(out, ": "...)
		out = append(out, v...)
		if i < len(fields)-1 {
			out = append(out, ',')
		}
		out = append(out, '\n')
	}
	return append(out, "}\n"...), nil
}

// RandomSource is a lazy tensor of Rows×Cols values ~ N(Mean, Std) in
// DType. Row r is generated from a PCG stream keyed by (Seed, Stream, r),
// so any byte range can be produced independently and repeatably without
// materializing the tensor.
type RandomSource struct {
	DType      ir.DType
	Rows, Cols int64
	Seed       uint64
	Stream     uint64
	Std, Mean  float32
}

func (s *RandomSource) elemSize() int64 {
	if s.DType == ir.F32 {
		return 4
	}
	return 2
}

// Size is the tensor's byte size.
func (s *RandomSource) Size() int64 { return s.Rows * s.Cols * s.elemSize() }

// ReadAt generates bytes [off, off+len(p)) of the tensor.
func (s *RandomSource) ReadAt(p []byte, off int64) (int, error) {
	size := s.Size()
	if off < 0 {
		return 0, errors.New("testmodel: negative offset")
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > size-off {
		p = p[:size-off]
	}
	es := s.elemSize()
	rowBytes := s.Cols * es
	row := make([]byte, rowBytes)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		r := pos / rowBytes
		s.genRow(r, row)
		n += copy(p[n:], row[pos-r*rowBytes:])
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// genRow writes row r's encoded values into dst.
func (s *RandomSource) genRow(r int64, dst []byte) {
	rng := rand.New(rand.NewPCG(s.Seed^0x9e3779b97f4a7c15*(s.Stream+1), uint64(r)))
	for i := int64(0); i < s.Cols; i++ {
		v := s.Mean + s.Std*float32(rng.NormFloat64())
		switch s.DType {
		case ir.F32:
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		case ir.F16:
			binary.LittleEndian.PutUint16(dst[2*i:], float16.Fromfloat32(v).Bits())
		default:
			binary.LittleEndian.PutUint16(dst[2*i:], bf16(v))
		}
	}
}

// bf16 rounds a finite float32 to bfloat16, nearest even.
func bf16(f float32) uint16 {
	u := math.Float32bits(f)
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

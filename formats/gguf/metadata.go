package gguf

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gemmaconv/gemmaconv/ir"
)

// QuantizationVersion is ggml's GGML_QNT_VERSION, written as
// general.quantization_version.
const QuantizationVersion = 2

// Key suffixes (after "<arch>.") and tokenizer keys.
const (
	keyContextLength   = "context_length"
	keyEmbeddingLength = "embedding_length"
	keyBlockCount      = "block_count"
	keyFFLength        = "feed_forward_length"
	keyHeadCount       = "attention.head_count"
	keyHeadCountKV     = "attention.head_count_kv"
	keyRMSEps          = "attention.layer_norm_rms_epsilon"
	keyKeyLength       = "attention.key_length"
	keyValueLength     = "attention.value_length"
	keyRopeBase        = "rope.freq_base"
	keyRopeBaseSWA     = "rope.freq_base_swa"
	keyRopeScaleType   = "rope.scaling.type"
	keyRopeScaleFactor = "rope.scaling.factor"
	keyRopeScaleLinear = "rope.scale_linear" // older name of the factor
	keyAttnSoftcap     = "attn_logit_softcapping"
	keyFinalSoftcap    = "final_logit_softcapping"
	keySlidingWindow   = "attention.sliding_window"
	keySlidingPattern  = "attention.sliding_window_pattern"
	// keyQueryScalar is gemmaconv's own key, written only when the model's
	// query scaling differs from what llama.cpp infers (docs/gguf.md).
	keyQueryScalar = "attention.query_pre_attn_scalar"

	keyTokModel      = "tokenizer.ggml.model"
	keyTokPre        = "tokenizer.ggml.pre"
	keyTokTokens     = "tokenizer.ggml.tokens"
	keyTokScores     = "tokenizer.ggml.scores"
	keyTokTypes      = "tokenizer.ggml.token_type"
	keyTokBOS        = "tokenizer.ggml.bos_token_id"
	keyTokEOS        = "tokenizer.ggml.eos_token_id"
	keyTokUNK        = "tokenizer.ggml.unknown_token_id"
	keyTokPAD        = "tokenizer.ggml.padding_token_id"
	keyTokEOT        = "tokenizer.ggml.eot_token_id"
	keyTokAddBOS     = "tokenizer.ggml.add_bos_token"
	keyTokAddEOS     = "tokenizer.ggml.add_eos_token"
	keyTokAddSpace   = "tokenizer.ggml.add_space_prefix"
	keyChatTemplate  = "tokenizer.chat_template"
	keyFileType      = "general.file_type"
	keyArchitecture  = "general.architecture"
	llamaRopeDefault = 10000.0 // llama.cpp's rope_freq_base_train when the key is absent
)

// Write writes m as a GGUF file whose metadata is what llama.cpp's
// convert_hf_to_gguf.py writes for the same Gemma model (see Metadata),
// followed by the tensors in m's order. m's norm weights must already hold
// 1+w: convert with ir.WithNormOffset(m, 0) first.
func Write(path string, m *ir.Model, opts WriteOptions) error {
	kvs, err := Metadata(m)
	if err != nil {
		return fmt.Errorf("gguf: %s: %w", path, err)
	}
	return WriteFile(path, kvs, m.Tensors, opts)
}

// Metadata returns the GGUF metadata for m, in llama.cpp's key order:
//
//   - general.architecture, type, name, size_label;
//   - the family's hyperparameters exactly as llama.cpp's Gemma, Gemma2
//     and Gemma3 converter classes write them, then gemmaconv's extra keys
//     for hyperparameters llama.cpp would infer differently (see
//     docs/gguf.md; none for stock Gemma models);
//   - general.quantization_version;
//   - the SentencePiece vocabulary as _set_vocab_sentencepiece writes it
//     (padded or cut to Config.Vocab, user-defined pieces typed NORMAL)
//     with the special ids, add_bos/add_eos, Gemma 1's eot_token_id and
//     add_space_prefix;
//   - m.Extra entries that are not standard keys, in their order.
//
// Extra entries may override general.* keys (general.name, size_label,
// file_type, ...) and tokenizer.ggml.pre in place; an Extra entry that
// contradicts a key derived from the config or tokenizer is an error.
// general.file_type, unless Extra sets it, is guessed from the tensor
// types as llama.cpp's loader guesses it.
func Metadata(m *ir.Model) ([]ir.KV, error) {
	c := m.Config
	if c.NormOffset != 0 {
		return nil, fmt.Errorf("norm weights use offset %g; GGUF stores 1+w: convert with ir.WithNormOffset(m, 0) first", c.NormOffset)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if m.Tokenizer == nil {
		return nil, errors.New("model has no tokenizer; a GGUF file needs its vocabulary")
	}
	arch := string(c.Family)
	b := &kvList{}
	a := func(suffix string, v any) { b.add(arch+"."+suffix, v) }

	b.add(keyArchitecture, arch)
	b.add("general.type", "model")
	b.add("general.name", defaultName(m))
	b.add("general.size_label", SizeLabel(m.Tensors))

	var fileType any = uint32(GuessFileType(m.Tensors))
	if v, ok := m.Lookup(keyFileType); ok {
		if _, ok := v.(uint32); !ok {
			return nil, fmt.Errorf("m.Extra[%q] is %T, must be uint32", keyFileType, v)
		}
		fileType = v
	}
	u32 := func(n int) uint32 { return uint32(n) }

	switch c.Family {
	case ir.Gemma1, ir.Gemma2:
		a(keyContextLength, u32(c.ContextLength))
		a(keyEmbeddingLength, u32(c.Hidden))
		a(keyBlockCount, u32(c.NumLayers))
		a(keyFFLength, u32(c.FFN))
		a(keyHeadCount, u32(c.NumHeads))
		a(keyHeadCountKV, u32(c.NumKVHeads))
		a(keyRMSEps, c.RMSNormEps)
		a(keyKeyLength, u32(c.HeadDim))
		a(keyValueLength, u32(c.HeadDim))
		b.add(keyFileType, fileType)
		if c.Family == ir.Gemma2 {
			a(keyAttnSoftcap, c.AttnSoftcap)
			a(keyFinalSoftcap, c.FinalSoftcap)
			a(keySlidingWindow, u32(c.SlidingWindow))
		}
		// Not written by llama.cpp for these families: its runtime assumes
		// base 10000, no scaling, one base for all layers.
		if c.RopeScale != 1 {
			a(keyRopeScaleType, "linear")
			a(keyRopeScaleFactor, float32(c.RopeScale))
		}
		if c.RopeBase != llamaRopeDefault {
			a(keyRopeBase, float32(c.RopeBase))
		}
		if c.RopeBaseLocal != c.RopeBase {
			a(keyRopeBaseSWA, float32(c.RopeBaseLocal))
		}
		if c.Family == ir.Gemma1 {
			if c.AttnSoftcap != 0 {
				a(keyAttnSoftcap, c.AttnSoftcap)
			}
			if c.FinalSoftcap != 0 {
				a(keyFinalSoftcap, c.FinalSoftcap)
			}
			if anyTrue(c.Sliding) {
				a(keySlidingWindow, u32(c.SlidingWindow))
			}
		}
	case ir.Gemma3:
		a(keyBlockCount, u32(c.NumLayers))
		a(keyContextLength, u32(c.ContextLength))
		a(keyEmbeddingLength, u32(c.Hidden))
		a(keyFFLength, u32(c.FFN))
		a(keyHeadCount, u32(c.NumHeads))
		a(keyHeadCountKV, u32(c.NumKVHeads))
		if c.RopeScale != 1 {
			a(keyRopeScaleType, "linear")
			a(keyRopeScaleFactor, float32(c.RopeScale))
		}
		a(keyRopeBase, float32(c.RopeBase))
		a(keyRopeBaseSWA, float32(c.RopeBaseLocal))
		a(keyRMSEps, c.RMSNormEps)
		a(keyKeyLength, u32(c.HeadDim))
		a(keyValueLength, u32(c.HeadDim))
		b.add(keyFileType, fileType)
		if c.FinalSoftcap != 0 {
			a(keyFinalSoftcap, c.FinalSoftcap)
		}
		if anyTrue(c.Sliding) {
			a(keySlidingWindow, u32(c.SlidingWindow))
		}
		if c.AttnSoftcap != 0 { // llama.cpp's Gemma 3 has none
			a(keyAttnSoftcap, c.AttnSoftcap)
		}
	}
	if v, ok := slidingPatternValue(c); ok {
		a(keySlidingPattern, v)
	}
	if q := inferredQueryScalar(c); c.QueryPreAttnScalar != q {
		a(keyQueryScalar, float32(c.QueryPreAttnScalar))
	}
	b.add("general.quantization_version", uint32(QuantizationVersion))

	if err := addVocab(b, m.Tokenizer, c); err != nil {
		return nil, err
	}
	if err := b.merge(m.Extra); err != nil {
		return nil, err
	}
	return b.kvs, nil
}

// kvList is metadata under construction.
type kvList struct {
	kvs   []ir.KV
	index map[string]int
}

func (b *kvList) add(key string, v any) {
	if b.index == nil {
		b.index = map[string]int{}
	}
	if i, ok := b.index[key]; ok {
		b.kvs[i].Value = v
		return
	}
	b.index[key] = len(b.kvs)
	b.kvs = append(b.kvs, ir.KV{Key: key, Value: v})
}

// insertAfter places key right after the existing key after (or at the
// end when after is absent).
func (b *kvList) insertAfter(after, key string, v any) {
	i, ok := b.index[after]
	if !ok {
		b.add(key, v)
		return
	}
	b.kvs = append(b.kvs[:i+1], append([]ir.KV{{Key: key, Value: v}}, b.kvs[i+1:]...)...)
	for j := i + 1; j < len(b.kvs); j++ {
		b.index[b.kvs[j].Key] = j
	}
}

// freeKey reports whether m.Extra may replace a standard key's value:
// descriptive general.* keys and the pre-tokenizer name, which the config
// does not determine.
func freeKey(key string) bool {
	return (strings.HasPrefix(key, "general.") && key != keyArchitecture) || key == keyTokPre
}

// merge applies m.Extra: standard keys are overridden in place when free
// and checked otherwise; other keys are appended in order, except that a
// chat template goes where llama.cpp puts it.
func (b *kvList) merge(extra []ir.KV) error {
	for _, kv := range extra {
		if i, ok := b.index[kv.Key]; ok {
			if freeKey(kv.Key) {
				b.kvs[i].Value = kv.Value
				continue
			}
			if !reflect.DeepEqual(b.kvs[i].Value, kv.Value) {
				return fmt.Errorf("m.Extra[%q] = %s contradicts %s derived from the model's config and tokenizer", kv.Key, brief(kv.Value), brief(b.kvs[i].Value))
			}
			continue
		}
		if kv.Key == keyChatTemplate {
			b.insertAfter(keyTokAddEOS, kv.Key, kv.Value)
			continue
		}
		b.add(kv.Key, kv.Value)
	}
	return nil
}

// brief formats a value for an error message, eliding long arrays.
func brief(v any) string {
	if t, _, _ := TypeOf(v); t == TypeArray {
		return fmt.Sprintf("%T of %d elements", v, ArrayLen(v))
	}
	s := fmt.Sprintf("%T(%v)", v, v)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// addVocab writes the vocabulary as llama.cpp's _set_vocab_sentencepiece
// does: Config.Vocab entries (missing ones as [PADn] with score -10000
// and type UNUSED, extra pieces dropped), SentencePiece's user-defined
// type mapped to NORMAL (llama.cpp only recognises normal, unknown,
// control, unused and byte pieces), then the special ids it can resolve.
func addVocab(b *kvList, t *ir.Tokenizer, c ir.Config) error {
	n := c.Vocab
	if len(t.Scores) != len(t.Pieces) || len(t.Types) != len(t.Pieces) {
		return fmt.Errorf("tokenizer has %d pieces, %d scores and %d types", len(t.Pieces), len(t.Scores), len(t.Types))
	}
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	for i := 0; i < n; i++ {
		if i >= len(t.Pieces) {
			tokens[i] = "[PAD" + strconv.Itoa(i) + "]"
			scores[i] = -10000
			types[i] = int32(ir.TokenUnused)
			continue
		}
		tokens[i] = t.Pieces[i]
		scores[i] = t.Scores[i]
		typ := t.Types[i]
		if typ == ir.TokenUserDefined {
			typ = ir.TokenNormal
		}
		types[i] = int32(typ)
	}
	model := t.Model
	if model == "" {
		model = "llama"
	}
	b.add(keyTokModel, model)
	b.add(keyTokPre, "default")
	b.add(keyTokTokens, tokens)
	b.add(keyTokScores, scores)
	b.add(keyTokTypes, types)
	id := func(key string, v int32) {
		if v >= 0 && int(v) < n {
			b.add(key, uint32(v))
		}
	}
	// llama.cpp reads these from config.json (bos, eos, pad); unk only
	// where config.json or tokenizer.json name it, so it is not written
	// here (readers recover it from the UNKNOWN-typed piece).
	id(keyTokBOS, t.BOS)
	id(keyTokEOS, t.EOS)
	id(keyTokPAD, t.PAD)
	b.add(keyTokAddBOS, t.AddBOS)
	b.add(keyTokAddEOS, t.AddEOS)
	if c.Family == ir.Gemma1 {
		// llama.cpp hardcodes 107, <end_of_turn> in Google's vocabulary;
		// the id of the piece itself is right for any vocabulary.
		eot := t.EOT
		if eot < 0 || int(eot) >= n {
			eot = tokenID(tokens, "<end_of_turn>")
		}
		id(keyTokEOT, eot)
	}
	b.add(keyTokAddSpace, t.AddSpacePrefix)
	return nil
}

func tokenID(tokens []string, piece string) int32 {
	for i, p := range tokens {
		if p == piece {
			return int32(i)
		}
	}
	return -1
}

func anyTrue(s []bool) bool {
	for _, v := range s {
		if v {
			return true
		}
	}
	return false
}

// defaultPeriod is the sliding-window period llama.cpp assumes for the
// family (set_swa_pattern), 0 for none.
func defaultPeriod(f ir.Family) (uint32, bool) {
	switch f {
	case ir.Gemma2:
		return 2, true
	case ir.Gemma3:
		return 6, true
	}
	return 0, false
}

// periodPattern is llama.cpp's set_swa_pattern(p): layer i is local
// unless it is the last of each group of p; p = 0 makes every layer local.
func periodPattern(p uint32, layers int) []bool {
	s := make([]bool, layers)
	for i := range s {
		s[i] = p == 0 || uint32(i)%p < p-1
	}
	return s
}

// inferredSliding is the layer pattern llama.cpp's runtime uses when the
// file has no pattern key: none for Gemma 1 and for a Gemma 3 file without
// a sliding window, the family's period otherwise.
func inferredSliding(c ir.Config) []bool {
	p, ok := defaultPeriod(c.Family)
	if !ok || (c.Family == ir.Gemma3 && !anyTrue(c.Sliding)) {
		return make([]bool, c.NumLayers)
	}
	return periodPattern(p, c.NumLayers)
}

// slidingPatternValue returns the sliding_window_pattern value to write
// when c's layer pattern is not what llama.cpp infers: a period as uint32
// where one reproduces it (llama.cpp's Gemma 2 and 3 read that), else one
// bool per layer.
func slidingPatternValue(c ir.Config) (any, bool) {
	if slices.Equal(c.Sliding, inferredSliding(c)) {
		return nil, false
	}
	for p := uint32(1); p <= uint32(c.NumLayers); p++ {
		if slices.Equal(c.Sliding, periodPattern(p, c.NumLayers)) {
			return p, true
		}
	}
	if slices.Equal(c.Sliding, periodPattern(0, c.NumLayers)) {
		return uint32(0), true
	}
	return append([]bool(nil), c.Sliding...), true
}

// inferredQueryScalar is the query_pre_attn_scalar llama.cpp's runtime
// assumes: hidden/heads for the 27B models (recognised by layer count),
// head_dim otherwise.
func inferredQueryScalar(c ir.Config) float64 {
	switch {
	case c.Family == ir.Gemma2 && c.NumLayers == 46, c.Family == ir.Gemma3 && c.NumLayers == 62:
		return float64(c.Hidden / c.NumHeads)
	}
	return float64(c.HeadDim)
}

// SizeLabel is gguf-py's size label for the tensors' total parameter
// count ("7.0M", "2.6B").
func SizeLabel(tensors []*ir.Tensor) string {
	var n int64
	for _, t := range tensors {
		n += t.NumElements()
	}
	x := float64(n)
	var scaled float64
	var suffix string
	switch {
	case x > 1e12:
		scaled, suffix = x*1e-12, "T"
	case x > 1e9:
		scaled, suffix = x*1e-9, "B"
	case x > 1e6:
		scaled, suffix = x*1e-6, "M"
	default:
		scaled, suffix = x*1e-3, "K"
	}
	digits := strings.TrimLeft(strconv.FormatFloat(math.RoundToEven(scaled), 'f', 0, 64), "0")
	fix := max(2-len(digits), 0)
	return strconv.FormatFloat(scaled, 'f', fix, 64) + suffix
}

// defaultName is general.name: m.Extra's if set, else the source's
// directory (or file) name in title case, as llama.cpp derives it.
func defaultName(m *ir.Model) string {
	p := filepath.Clean(m.Provenance.Path)
	if m.Provenance.Path == "" {
		return "Gemma"
	}
	base := filepath.Base(p)
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		base = strings.TrimSuffix(base, filepath.Ext(base))
	}
	words := strings.FieldsFunc(base, func(r rune) bool { return r == '-' || r == '_' || r == ' ' })
	for i, w := range words {
		r, size := utf8.DecodeRuneInString(w)
		words[i] = string(unicode.ToUpper(r)) + w[size:]
	}
	if len(words) == 0 {
		return "Gemma"
	}
	return strings.Join(words, " ")
}

// FileType values (llama.cpp's llama_ftype) for the tensor types
// GuessFileType recognises.
var fileTypeOf = map[ir.DType]uint32{
	ir.F32: 0, ir.F16: 1, ir.Q4_0: 2, ir.Q4_1: 3, ir.Q8_0: 7, ir.Q5_0: 8, ir.Q5_1: 9,
	ir.Q2_K: 10, ir.Q3_K: 12, ir.Q4_K: 15, ir.Q5_K: 17, ir.Q6_K: 18,
	ir.IQ2_XXS: 19, ir.IQ2_XS: 20, ir.IQ3_XXS: 23, ir.IQ1_S: 24, ir.IQ4_NL: 25,
	ir.IQ3_S: 26, ir.IQ2_S: 28, ir.IQ4_XS: 30, ir.IQ1_M: 31, ir.BF16: 32,
	ir.TQ1_0: 36, ir.TQ2_0: 37,
}

// GuessFileType returns the llama_ftype llama.cpp's loader guesses for a
// file without general.file_type: that of the most common tensor type
// (ties going to the type that reached the count first in name order),
// with K-quant types taken as their _M presets. Unrecognised types give
// ALL_F32 (0), as in llama.cpp.
func GuessFileType(tensors []*ir.Tensor) uint32 {
	sorted := append([]*ir.Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	count := map[ir.DType]int{}
	best, bestN := ir.F32, 0
	for _, t := range sorted {
		count[t.DType]++
		if count[t.DType] > bestN {
			best, bestN = t.DType, count[t.DType]
		}
	}
	return fileTypeOf[best]
}

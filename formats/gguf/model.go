package gguf

import (
	"fmt"
	"math"
	"os"

	"github.com/gemmaconv/gemmaconv/ir"
)

func init() {
	ir.RegisterFormat(ir.Format{
		Name:   "gguf",
		Detect: Detect,
		Open: func(path string, _ ir.OpenOptions) (*ir.Model, error) {
			return OpenModel(path)
		},
	})
}

// Detect reports whether path is a file that starts with the GGUF magic.
func Detect(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return false
	}
	var b [4]byte
	n, _ := f.ReadAt(b[:], 0)
	return n == 4 && string(b[:]) == Magic
}

// OpenModel reads a Gemma GGUF file as an ir.Model whose tensors are
// windows of the mapped file, keeping their stored types (quantized ones
// too). Config and tokenizer come from the metadata as llama.cpp's runtime
// interprets it (docs/gguf.md); every key they do not account for — the
// general.* keys, quantization keys, the pre-tokenizer name, a chat
// template, unknown ones — is kept in m.Extra in file order, so Write
// reproduces the metadata. Close the model to unmap the file.
func OpenModel(path string) (*ir.Model, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := modelFromFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// meta reads typed values out of a File's metadata, recording which keys
// it consumed.
type meta struct {
	f        *File
	consumed map[string]bool
}

func (r *meta) errf(key, format string, args ...any) error {
	return &Error{Path: r.f.Path, Item: fmt.Sprintf("key %q", key), Offset: r.f.KeyOffset(key), Msg: fmt.Sprintf(format, args...)}
}

func (r *meta) get(key string) (any, bool) {
	v, ok := r.f.Lookup(key)
	if ok {
		r.consumed[key] = true
	}
	return v, ok
}

// uint reads a non-negative integer of any GGUF integer type.
func (r *meta) uint(key string, required bool, def int) (int, error) {
	v, ok := r.get(key)
	if !ok {
		if required {
			return 0, fmt.Errorf("gguf: %s: required key %q is missing", r.f.Path, key)
		}
		return def, nil
	}
	return r.toInt(key, v)
}

// toInt converts an integer value of any GGUF integer type to an int in
// [0, MaxInt32].
func (r *meta) toInt(key string, v any) (int, error) {
	var x int64
	switch n := v.(type) {
	case uint8:
		x = int64(n)
	case int8:
		x = int64(n)
	case uint16:
		x = int64(n)
	case int16:
		x = int64(n)
	case uint32:
		x = int64(n)
	case int32:
		x = int64(n)
	case int64:
		x = n
	case uint64:
		if n > math.MaxInt32 {
			return 0, r.errf(key, "value %d is out of range", n)
		}
		x = int64(n)
	default:
		return 0, r.errf(key, "is %s, want an integer", brief(v))
	}
	if x < 0 || x > math.MaxInt32 {
		return 0, r.errf(key, "value %d is out of range", x)
	}
	return int(x), nil
}

// float reads a float32 or float64.
func (r *meta) float(key string, required bool, def float64) (float64, error) {
	v, ok := r.get(key)
	if !ok {
		if required {
			return 0, fmt.Errorf("gguf: %s: required key %q is missing", r.f.Path, key)
		}
		return def, nil
	}
	var x float64
	switch n := v.(type) {
	case float32:
		x = float64(n)
	case float64:
		x = n
	default:
		return 0, r.errf(key, "is %s, want a float", brief(v))
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, r.errf(key, "value %v is not finite", x)
	}
	return x, nil
}

func (r *meta) boolean(key string, def bool) (bool, error) {
	v, ok := r.get(key)
	if !ok {
		return def, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, r.errf(key, "is %s, want a bool", brief(v))
	}
	return b, nil
}

func modelFromFile(f *File) (*ir.Model, error) {
	r := &meta{f: f, consumed: map[string]bool{}}
	av, ok := r.get(keyArchitecture)
	if !ok {
		return nil, fmt.Errorf("gguf: %s: no general.architecture: not a model file", f.Path)
	}
	arch, _ := av.(string)
	var c ir.Config
	switch ir.Family(arch) {
	case ir.Gemma1, ir.Gemma2, ir.Gemma3:
		c.Family = ir.Family(arch)
	default:
		return nil, r.errf(keyArchitecture, "architecture %s is not a Gemma text model (gemma, gemma2, gemma3)", brief(av))
	}
	k := func(s string) string { return arch + "." + s }
	var err error
	ints := []struct {
		key      string
		dst      *int
		required bool
	}{
		{keyBlockCount, &c.NumLayers, true}, {keyContextLength, &c.ContextLength, true},
		{keyEmbeddingLength, &c.Hidden, true}, {keyFFLength, &c.FFN, true},
		{keyHeadCount, &c.NumHeads, true},
	}
	for _, x := range ints {
		if *x.dst, err = r.uint(k(x.key), x.required, 0); err != nil {
			return nil, err
		}
	}
	if c.NumHeads == 0 {
		return nil, r.errf(k(keyHeadCount), "is 0")
	}
	// Every layer has at least nine tensors; checking before anything is
	// sized by the layer count keeps a corrupt count from allocating.
	if c.NumLayers == 0 || c.NumLayers > len(f.Tensors)/9 {
		return nil, r.errf(k(keyBlockCount), "%d layers, but the file has %d tensors (a Gemma layer has at least 9)", c.NumLayers, len(f.Tensors))
	}
	if c.NumKVHeads, err = r.uint(k(keyHeadCountKV), false, c.NumHeads); err != nil {
		return nil, err
	}
	if c.HeadDim, err = r.uint(k(keyKeyLength), false, c.Hidden/c.NumHeads); err != nil {
		return nil, err
	}
	vdim, err := r.uint(k(keyValueLength), false, c.Hidden/c.NumHeads)
	if err != nil {
		return nil, err
	}
	if vdim != c.HeadDim {
		return nil, r.errf(k(keyValueLength), "value head size %d differs from key head size %d; Gemma uses one head size", vdim, c.HeadDim)
	}
	eps, err := r.float(k(keyRMSEps), true, 0)
	if err != nil {
		return nil, err
	}
	c.RMSNormEps = float32(eps)

	// RoPE: llama.cpp's defaults are base 10000 and, for local layers, the
	// global base (Gemma 2) or 10000 (Gemma 3).
	if c.RopeBase, err = r.float(k(keyRopeBase), false, llamaRopeDefault); err != nil {
		return nil, err
	}
	localDefault := c.RopeBase
	if c.Family == ir.Gemma3 {
		localDefault = llamaRopeDefault
	}
	if c.RopeBaseLocal, err = r.float(k(keyRopeBaseSWA), false, localDefault); err != nil {
		return nil, err
	}
	if c.RopeScale, err = ropeScale(r, arch); err != nil {
		return nil, err
	}

	// Softcaps: llama.cpp's Gemma 2 defaults are 50 and 30.
	attnDef, finalDef := 0.0, 0.0
	if c.Family == ir.Gemma2 {
		attnDef, finalDef = 50, 30
	}
	v, err := r.float(k(keyAttnSoftcap), false, attnDef)
	if err != nil {
		return nil, err
	}
	c.AttnSoftcap = float32(v)
	if v, err = r.float(k(keyFinalSoftcap), false, finalDef); err != nil {
		return nil, err
	}
	c.FinalSoftcap = float32(v)

	// Sliding window: Gemma 2 defaults to 4096; Gemma 3 has local layers
	// only when the window key is present and positive.
	winDef := 0
	if c.Family == ir.Gemma2 {
		winDef = 4096
	}
	if c.SlidingWindow, err = r.uint(k(keySlidingWindow), false, winDef); err != nil {
		return nil, err
	}
	c.Sliding = make([]bool, c.NumLayers)
	if p, ok := defaultPeriod(c.Family); ok && c.SlidingWindow > 0 {
		c.Sliding = periodPattern(p, c.NumLayers)
	}
	if pv, ok := r.get(k(keySlidingPattern)); ok {
		switch x := pv.(type) {
		case uint32:
			c.Sliding = periodPattern(x, c.NumLayers)
		case []bool:
			if len(x) != c.NumLayers {
				return nil, r.errf(k(keySlidingPattern), "has %d entries for %d layers", len(x), c.NumLayers)
			}
			c.Sliding = append([]bool(nil), x...)
		default:
			return nil, r.errf(k(keySlidingPattern), "is %s, want uint32 or bool array", brief(pv))
		}
	}
	if c.Family == ir.Gemma1 && !anyTrue(c.Sliding) {
		c.SlidingWindow = 0
	}

	c.QKNorm = c.Family == ir.Gemma3
	c.PostNorms = c.Family != ir.Gemma1
	c.NormOffset = 0
	if c.QueryPreAttnScalar, err = r.float(k(keyQueryScalar), false, inferredQueryScalar(c)); err != nil {
		return nil, err
	}

	m := &ir.Model{Provenance: ir.Provenance{Format: "gguf", Path: f.Path, Files: []string{f.Path}}}
	for _, ti := range f.Tensors {
		m.Tensors = append(m.Tensors, &ir.Tensor{Name: ti.Name, DType: ti.Type, Shape: ti.Shape(), Source: f.Window(ti)})
	}
	ir.SortTensors(m.Tensors)
	emb := m.Tensor("token_embd.weight")
	c.TiedEmbeddings = m.Tensor("output.weight") == nil

	tok, err := tokenizerFromFile(r, c.Family, m)
	if err != nil {
		return nil, err
	}
	m.Tokenizer = tok
	switch {
	case emb != nil && len(emb.Shape) == 2:
		c.Vocab = int(emb.Shape[0])
	case tok != nil:
		c.Vocab = len(tok.Pieces)
	}
	m.Config = c

	for _, kv := range f.KV {
		if !r.consumed[kv.Key] {
			m.Extra = append(m.Extra, kv)
		}
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("gguf: %s: %w", f.Path, err)
	}
	m.OnClose(f)
	return m, nil
}

// ropeScale reads the linear RoPE scaling factor (1 when none).
func ropeScale(r *meta, arch string) (float64, error) {
	typKey := arch + "." + keyRopeScaleType
	typ := "linear" // llama.cpp's default when a factor is given without a type
	if v, ok := r.get(typKey); ok {
		s, ok := v.(string)
		if !ok {
			return 0, r.errf(typKey, "is %s, want a string", brief(v))
		}
		typ = s
	}
	factor, err := r.float(arch+"."+keyRopeScaleFactor, false, 0)
	if err != nil {
		return 0, err
	}
	if factor == 0 {
		if factor, err = r.float(arch+"."+keyRopeScaleLinear, false, 0); err != nil {
			return 0, err
		}
	}
	switch typ {
	case "none":
		return 1, nil
	case "linear":
		if factor == 0 {
			return 1, nil
		}
		if factor < 0 {
			return 0, r.errf(arch+"."+keyRopeScaleFactor, "negative factor %v", factor)
		}
		return factor, nil
	}
	return 0, r.errf(typKey, "RoPE scaling %q is not supported (Gemma uses linear)", typ)
}

// tokenizerFromFile reads the vocabulary; nil when the file has none.
func tokenizerFromFile(r *meta, fam ir.Family, m *ir.Model) (*ir.Tokenizer, error) {
	tv, ok := r.get(keyTokTokens)
	if !ok {
		return nil, nil
	}
	pieces, ok := tv.([]string)
	if !ok {
		return nil, r.errf(keyTokTokens, "is %s, want a string array", brief(tv))
	}
	n := len(pieces)
	t := &ir.Tokenizer{
		Model:  "llama",
		Pieces: pieces,
		Scores: make([]float32, n),
		Types:  make([]ir.TokenType, n),
		// Settings GGUF does not store take Gemma's SentencePiece values.
		SplitDigits:            true,
		RemoveExtraWhitespaces: false,
		Normalizer:             "identity",
	}
	if v, ok := r.get(keyTokModel); ok {
		s, ok := v.(string)
		if !ok {
			return nil, r.errf(keyTokModel, "is %s, want a string", brief(v))
		}
		t.Model = s
	}
	if v, ok := r.get(keyTokScores); ok {
		s, ok := v.([]float32)
		if !ok || len(s) != n {
			return nil, r.errf(keyTokScores, "is %s, want %d float32s", brief(v), n)
		}
		copy(t.Scores, s)
	}
	for i := range t.Types {
		t.Types[i] = ir.TokenNormal
	}
	if v, ok := r.get(keyTokTypes); ok {
		s, ok := v.([]int32)
		if !ok || len(s) != n {
			return nil, r.errf(keyTokTypes, "is %s, want %d int32s", brief(v), n)
		}
		for i, x := range s {
			t.Types[i] = ir.TokenType(x)
		}
	}
	for _, ty := range t.Types {
		if ty == ir.TokenByte {
			t.ByteFallback = true
			break
		}
	}
	var err error
	// special reads a token id; consume says whether the writer
	// regenerates the key (else it also stays in Extra).
	special := func(key string, consume bool, def int32) (int32, error) {
		v, ok := r.f.Lookup(key)
		if !ok {
			return def, nil
		}
		if consume {
			r.consumed[key] = true
		}
		id, err := r.toInt(key, v)
		if err != nil {
			return 0, err
		}
		if id >= n {
			m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("%s = %d is outside the %d-token vocabulary; ignored", key, id, n))
			return -1, nil
		}
		return int32(id), nil
	}
	if t.BOS, err = special(keyTokBOS, true, -1); err != nil {
		return nil, err
	}
	if t.EOS, err = special(keyTokEOS, true, -1); err != nil {
		return nil, err
	}
	if t.PAD, err = special(keyTokPAD, true, -1); err != nil {
		return nil, err
	}
	// The writer does not produce unknown_token_id (llama.cpp's converter
	// writes it only for some source layouts), so it stays in Extra; the
	// UNKNOWN-typed piece is SentencePiece's unk when the key is absent.
	unk := int32(-1)
	for i, ty := range t.Types {
		if ty == ir.TokenUnknown {
			unk = int32(i)
			break
		}
	}
	if t.UNK, err = special(keyTokUNK, false, unk); err != nil {
		return nil, err
	}
	// Gemma 1's eot id is a standard key; Gemma 2 and 3 files have none
	// (llama.cpp finds <end_of_turn> by its text), so any such key stays
	// in Extra.
	eot := tokenID(pieces, "<end_of_turn>")
	if t.EOT, err = special(keyTokEOT, fam == ir.Gemma1, eot); err != nil {
		return nil, err
	}
	if t.AddBOS, err = r.boolean(keyTokAddBOS, true); err != nil {
		return nil, err
	}
	if t.AddEOS, err = r.boolean(keyTokAddEOS, false); err != nil {
		return nil, err
	}
	// llama.cpp's SentencePiece default when the key is absent is true.
	if t.AddSpacePrefix, err = r.boolean(keyTokAddSpace, true); err != nil {
		return nil, err
	}
	return t, nil
}

package jax

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// param is one array of a google-deepmind/gemma parameter tree, from
// either container (flax msgpack or Orbax).
type param struct {
	path    string // key path joined with "/": "transformer/layer_0/attn/q_einsum/w"
	shape   []int64
	dtype   ir.DType
	src     io.ReaderAt // C-order little-endian bytes
	release func()
	where   string // location for error messages
}

func (p *param) size() int64 {
	n := int64(p.dtype.TypeSize())
	for _, d := range p.shape {
		n *= d
	}
	return n
}

// shape inferred from the parameter tree.
type dims struct {
	family                 ir.Family
	layers, d, n, k, h, f  int
	rows                   int // input_embedding rows (vocabulary plus padding)
	qkvFused               bool
	hasQKNorm, hasPostNorm bool
}

var layerRE = regexp.MustCompile(`^transformer/layer_(\d+)/(.+)$`)

// gemmaTree indexes a parameter tree by normalized path.
type gemmaTree struct {
	byPath map[string]*param
	used   map[string]bool
	layers int
}

func newTree(params []*param) (*gemmaTree, error) {
	t := &gemmaTree{byPath: map[string]*param{}, used: map[string]bool{}}
	maxLayer := -1
	for _, p := range params {
		// Flax train states wrap the tree in {"params": ...}.
		p.path = strings.TrimPrefix(p.path, "params/")
		if q, dup := t.byPath[p.path]; dup {
			return nil, fmt.Errorf("parameter %s appears twice (%s and %s)", p.path, q.where, p.where)
		}
		t.byPath[p.path] = p
		if m := layerRE.FindStringSubmatch(p.path); m != nil {
			i, err := strconv.Atoi(m[1])
			if err != nil || i > 1<<16 {
				return nil, fmt.Errorf("parameter %s: layer number out of range", p.path)
			}
			maxLayer = max(maxLayer, i)
		}
	}
	t.layers = maxLayer + 1
	return t, nil
}

// get returns the parameter at path (or, with a "/w" suffix, the module's
// weight: flax Einsum modules hold "w", the feed-forward params do not).
func (t *gemmaTree) get(path string) *param {
	for _, p := range []string{path, path + "/w"} {
		if q := t.byPath[p]; q != nil {
			t.used[p] = true
			return q
		}
	}
	return nil
}

func (t *gemmaTree) layer(i int, rel string) *param {
	return t.get(fmt.Sprintf("transformer/layer_%d/%s", i, rel))
}

func (t *gemmaTree) has(i int, rel string) bool {
	p := fmt.Sprintf("transformer/layer_%d/%s", i, rel)
	return t.byPath[p] != nil || t.byPath[p+"/w"] != nil
}

func shapeIs(p *param, want ...int64) bool {
	if len(p.shape) != len(want) {
		return false
	}
	for i := range want {
		if want[i] >= 0 && p.shape[i] != want[i] {
			return false
		}
	}
	return true
}

// infer reads the model's sizes off the tree's shapes.
func (t *gemmaTree) infer() (dims, error) {
	var g dims
	emb := t.get("transformer/embedder/input_embedding")
	if emb == nil {
		return g, errors.New("transformer/embedder/input_embedding is missing: not a Gemma parameter tree")
	}
	if len(emb.shape) != 2 {
		return g, fmt.Errorf("transformer/embedder/input_embedding has shape %v, want [vocab, width]", emb.shape)
	}
	g.rows, g.d = int(emb.shape[0]), int(emb.shape[1])
	g.layers = t.layers
	if g.layers == 0 {
		return g, errors.New("no transformer/layer_N parameters")
	}
	d := int64(g.d)
	if q := t.layer(0, "attn/qkv_einsum"); q != nil {
		if !shapeIs(q, 3, -1, d, -1) {
			return g, fmt.Errorf("layer 0 attn/qkv_einsum has shape %v, want [3, heads, %d, head_dim]", q.shape, d)
		}
		g.qkvFused = true
		g.n, g.k, g.h = int(q.shape[1]), int(q.shape[1]), int(q.shape[3])
	} else {
		q, kv := t.layer(0, "attn/q_einsum"), t.layer(0, "attn/kv_einsum")
		if q == nil || kv == nil {
			return g, errors.New("layer 0 has neither attn/qkv_einsum nor attn/q_einsum with attn/kv_einsum")
		}
		if !shapeIs(q, -1, d, -1) {
			return g, fmt.Errorf("layer 0 attn/q_einsum has shape %v, want [heads, %d, head_dim]", q.shape, d)
		}
		g.n, g.h = int(q.shape[0]), int(q.shape[2])
		if !shapeIs(kv, 2, -1, d, int64(g.h)) {
			return g, fmt.Errorf("layer 0 attn/kv_einsum has shape %v, want [2, kv_heads, %d, %d]", kv.shape, d, g.h)
		}
		g.k = int(kv.shape[1])
	}
	lin := t.layer(0, "mlp/linear")
	if lin == nil || !shapeIs(lin, -1, d) {
		return g, fmt.Errorf("layer 0 mlp/linear is missing or not [ffn, %d]", d)
	}
	g.f = int(lin.shape[0])
	g.hasQKNorm = t.has(0, "attn/_query_norm/scale")
	g.hasPostNorm = t.has(0, "post_attention_norm/scale")
	switch {
	case g.hasQKNorm:
		g.family = ir.Gemma3
	case g.hasPostNorm:
		g.family = ir.Gemma2
	default:
		g.family = ir.Gemma1
	}
	return g, nil
}

// release describes a released Gemma size: the sizes that identify it and
// the Hugging Face config values the shapes cannot tell.
type release struct {
	name                  string
	family                ir.Family
	layers, d, n, k, h, f int
	vocab                 int
	extra                 map[string]any
}

// releases are the published Gemma text models (Hugging Face configs of
// google/gemma-*); a JAX checkpoint whose shapes match one gets its
// hyperparameters from here when no config.json is given.
var releases = []release{
	{"Gemma 2B", ir.Gemma1, 18, 2048, 8, 1, 256, 16384, 256000, map[string]any{"max_position_embeddings": 8192, "rope_theta": 10000.0}},
	{"Gemma 7B", ir.Gemma1, 28, 3072, 16, 16, 256, 24576, 256000, map[string]any{"max_position_embeddings": 8192, "rope_theta": 10000.0}},
	{"Gemma 2 2B", ir.Gemma2, 26, 2304, 8, 4, 256, 9216, 256000, map[string]any{"query_pre_attn_scalar": 256, "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "max_position_embeddings": 8192}},
	{"Gemma 2 9B", ir.Gemma2, 42, 3584, 16, 8, 256, 14336, 256000, map[string]any{"query_pre_attn_scalar": 256, "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "max_position_embeddings": 8192}},
	{"Gemma 2 27B", ir.Gemma2, 46, 4608, 32, 16, 128, 36864, 256000, map[string]any{"query_pre_attn_scalar": 144, "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "max_position_embeddings": 8192}},
	{"Gemma 3 270M", ir.Gemma3, 18, 640, 4, 1, 256, 2048, 262144, map[string]any{"query_pre_attn_scalar": 256, "sliding_window": 512, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0}},
	{"Gemma 3 1B", ir.Gemma3, 26, 1152, 4, 1, 256, 6912, 262144, map[string]any{"query_pre_attn_scalar": 256, "sliding_window": 512, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0}},
	{"Gemma 3 4B", ir.Gemma3, 34, 2560, 8, 4, 256, 10240, 262144, map[string]any{"query_pre_attn_scalar": 256, "sliding_window": 1024, "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": map[string]any{"rope_type": "linear", "factor": 8.0}}},
	{"Gemma 3 12B", ir.Gemma3, 48, 3840, 16, 8, 256, 15360, 262144, map[string]any{"query_pre_attn_scalar": 256, "sliding_window": 1024, "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": map[string]any{"rope_type": "linear", "factor": 8.0}}},
	{"Gemma 3 27B", ir.Gemma3, 62, 5376, 32, 16, 128, 21504, 262144, map[string]any{"query_pre_attn_scalar": 168, "sliding_window": 1024, "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": map[string]any{"rope_type": "linear", "factor": 8.0}}},
}

var hfModelType = map[ir.Family]string{ir.Gemma1: "gemma", ir.Gemma2: "gemma2", ir.Gemma3: "gemma3_text"}

// configFromDims builds a config from the shapes: a released size's
// hyperparameters, or (only when the caller named the family) the
// family's defaults, each listed in a provenance note.
func configFromDims(g dims, vocab int, arch ir.Family) (ir.Config, string, error) {
	hf := map[string]any{
		"model_type": hfModelType[g.family], "vocab_size": vocab, "hidden_size": g.d,
		"intermediate_size": g.f, "num_hidden_layers": g.layers, "num_attention_heads": g.n,
		"num_key_value_heads": g.k, "head_dim": g.h, "rms_norm_eps": 1e-6,
	}
	var note string
	found := false
	for _, r := range releases {
		if r.family == g.family && r.layers == g.layers && r.d == g.d && r.n == g.n && r.k == g.k && r.h == g.h && r.f == g.f {
			for k, v := range r.extra {
				hf[k] = v
			}
			note = fmt.Sprintf("no config.json: shapes match %s; its published hyperparameters were used", r.name)
			found = true
			break
		}
	}
	if !found {
		if arch == "" {
			return ir.Config{}, "", fmt.Errorf("no config.json given and the shapes (%s: %d layers, width %d, %d heads, %d kv heads, head dim %d, ffn %d) are not a released Gemma size: "+
				"rope bases, sliding window and layer pattern, softcaps, query scaling, epsilon and context length cannot be read off shapes; pass a Hugging Face config.json (or name the family to accept its defaults)",
				g.family, g.layers, g.d, g.n, g.k, g.h, g.f)
		}
		note = fmt.Sprintf("no config.json and not a released size: %s family defaults were assumed for rope bases, window, softcaps, query scaling (see docs/formats-jax.md)", g.family)
	}
	data, err := json.Marshal(hf)
	if err != nil {
		return ir.Config{}, "", err
	}
	c, err := ir.ConfigFromHF(data)
	if err != nil {
		return ir.Config{}, "", err
	}
	return c, note, nil
}

// checkConfig verifies a given config against the shapes.
func checkConfig(c ir.Config, g dims) error {
	if c.Family != g.family {
		return fmt.Errorf("the config describes a %s model, but the parameters are %s's (%s)", c.Family, g.family, familyEvidence(g))
	}
	for _, x := range []struct {
		name      string
		cfg, have int
	}{{"layers", c.NumLayers, g.layers}, {"hidden size", c.Hidden, g.d}, {"heads", c.NumHeads, g.n}, {"kv heads", c.NumKVHeads, g.k}, {"head dim", c.HeadDim, g.h}, {"feed-forward size", c.FFN, g.f}} {
		if x.cfg != x.have {
			return fmt.Errorf("the config says %s = %d, the parameters have %d", x.name, x.cfg, x.have)
		}
	}
	if c.Vocab > g.rows {
		return fmt.Errorf("the config's vocabulary of %d exceeds input_embedding's %d rows", c.Vocab, g.rows)
	}
	return nil
}

func familyEvidence(g dims) string {
	switch {
	case g.hasQKNorm:
		return "query/key norms"
	case g.hasPostNorm:
		return "post-attention norms, no query/key norms"
	}
	return "no post-attention or query/key norms"
}

// findBeside returns the first existing file named name in dirs.
func findBeside(name string, dirs ...string) string {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// besideDirs is where a checkpoint's config.json and tokenizer.model may
// sit: beside a file; in a checkpoint directory or its parent (Gemma
// releases put tokenizer.model next to the checkpoint directory).
func besideDirs(path string, isDir bool) []string {
	if !isDir {
		return []string{filepath.Dir(path)}
	}
	return []string{path, filepath.Dir(filepath.Clean(path))}
}

// buildModel maps a Gemma parameter tree to the canonical IR.
func buildModel(m *ir.Model, params []*param, opts ir.OpenOptions, path string, isDir bool) error {
	t, err := newTree(params)
	if err != nil {
		return err
	}
	g, err := t.infer()
	if err != nil {
		return err
	}
	if opts.Arch != "" && opts.Arch != g.family {
		return fmt.Errorf("%s was requested, but the parameters are %s's (%s)", opts.Arch, g.family, familyEvidence(g))
	}
	note := func(format string, args ...any) {
		m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf(format, args...))
	}
	dirs := besideDirs(path, isDir)

	// Tokenizer.
	tokPath := opts.TokenizerPath
	if tokPath == "" {
		if tokPath = findBeside("tokenizer.model", dirs...); tokPath == "" {
			return fmt.Errorf("no tokenizer.model beside %s; pass a tokenizer path", path)
		}
	}
	tok, err := tokenizer.LoadSentencePiece(tokPath)
	if err != nil {
		return err
	}
	m.Provenance.Files = append(m.Provenance.Files, tokPath)
	m.Tokenizer = tok

	// Config.
	cfgPath := opts.ConfigPath
	if cfgPath == "" {
		cfgPath = findBeside("config.json", dirs...)
	}
	if cfgPath != "" {
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			return err
		}
		c, err := ir.ConfigFromHF(data)
		if err != nil {
			return fmt.Errorf("%s: %w", cfgPath, err)
		}
		if err := checkConfig(c, g); err != nil {
			return fmt.Errorf("%s: %w", cfgPath, err)
		}
		m.Config = c
		m.Provenance.Files = append(m.Provenance.Files, cfgPath)
	} else {
		vocab := len(tok.Pieces)
		if vocab > g.rows {
			return fmt.Errorf("the tokenizer has %d pieces, input_embedding only %d rows", vocab, g.rows)
		}
		c, n, err := configFromDims(g, vocab, opts.Arch)
		if err != nil {
			return err
		}
		m.Config = c
		note("%s", n)
	}
	c := m.Config
	c.NormOffset = 1 // JAX Gemma computes x * (1 + scale)
	m.Config = c

	if err := mapTensors(m, t, g); err != nil {
		return err
	}

	// Anything left over must be understood, or the model would silently
	// drop weights.
	var ignored, unknown []string
	for p := range t.byPath {
		if t.used[p] {
			continue
		}
		switch {
		case strings.HasPrefix(p, "transformer/embedder/mm_"), !strings.HasPrefix(p, "transformer/"):
			ignored = append(ignored, p)
		default:
			unknown = append(unknown, p)
		}
	}
	sort.Strings(ignored)
	sort.Strings(unknown)
	if len(unknown) > 0 {
		return fmt.Errorf("parameter %s is not part of a %s text decoder (%d unknown)", unknown[0], g.family, len(unknown))
	}
	if len(ignored) > 0 {
		note("ignored %d parameters outside the text decoder (%s ...): gemmaconv converts the text decoder only", len(ignored), ignored[0])
	}
	ir.SortTensors(m.Tensors)
	return m.Validate()
}

// mapTensors adds the canonical tensors for every parameter.
func mapTensors(m *ir.Model, t *gemmaTree, g dims) error {
	c := m.Config
	d, n, k, h, f := int64(g.d), int64(g.n), int64(g.k), int64(g.h), int64(g.f)
	add := func(name string, dt ir.DType, shape []int64, src io.ReaderAt) {
		m.Tensors = append(m.Tensors, &ir.Tensor{Name: name, DType: dt, Shape: shape, Source: src})
	}
	win := func(p *param, off, size int64) io.ReaderAt {
		return window{io.NewSectionReader(p.src, off, size), p.release, p.path + " (" + p.where + ")"}
	}
	need := func(path string, shape ...int64) (*param, error) {
		p := t.get(path)
		if p == nil {
			return nil, fmt.Errorf("parameter %s is missing", path)
		}
		if !shapeIs(p, shape...) {
			return nil, fmt.Errorf("parameter %s (%s) has shape %v, want %v", path, p.where, p.shape, shape)
		}
		if !p.dtype.IsFloat() {
			return nil, fmt.Errorf("parameter %s (%s) is %s, not a float type", path, p.where, p.dtype)
		}
		return p, nil
	}

	emb, err := need("transformer/embedder/input_embedding", int64(g.rows), d)
	if err != nil {
		return err
	}
	v := int64(c.Vocab)
	add("token_embd.weight", emb.dtype, []int64{v, d}, win(emb, 0, v*d*int64(emb.dtype.TypeSize())))
	if int64(g.rows) > v {
		m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("token_embd: dropped %d padding rows of input_embedding (%d rows for a %d-token vocabulary)", int64(g.rows)-v, g.rows, v))
	}
	fn, err := need("transformer/final_norm/scale", d)
	if err != nil {
		return err
	}
	add("output_norm.weight", fn.dtype, []int64{d}, win(fn, 0, fn.size()))

	for i := 0; i < g.layers; i++ {
		lp := fmt.Sprintf("transformer/layer_%d/", i)
		bn := fmt.Sprintf("blk.%d.", i)
		norm := func(rel, name string, width int64) error {
			p, err := need(lp+rel, width)
			if err != nil {
				return err
			}
			add(bn+name, p.dtype, []int64{width}, win(p, 0, p.size()))
			return nil
		}
		if err := norm("pre_attention_norm/scale", "attn_norm.weight", d); err != nil {
			return err
		}
		if err := norm("pre_ffw_norm/scale", "ffn_norm.weight", d); err != nil {
			return err
		}
		if c.PostNorms {
			if err := norm("post_attention_norm/scale", "post_attention_norm.weight", d); err != nil {
				return err
			}
			if err := norm("post_ffw_norm/scale", "post_ffw_norm.weight", d); err != nil {
				return err
			}
		}
		if c.QKNorm {
			if err := norm("attn/_query_norm/scale", "attn_q_norm.weight", h); err != nil {
				return err
			}
			if err := norm("attn/_key_norm/scale", "attn_k_norm.weight", h); err != nil {
				return err
			}
		}

		// Attention: einsum weights [heads, D, H] become [heads*H, D].
		if g.qkvFused {
			p, err := need(lp+"attn/qkv_einsum", 3, n, d, h)
			if err != nil {
				return err
			}
			es := int64(p.dtype.TypeSize())
			add(bn+"attn_q.weight", p.dtype, []int64{n * h, d}, newTransposed(p, 0, n, d, h))
			add(bn+"attn_k.weight", p.dtype, []int64{n * h, d}, newTransposed(p, n*d*h*es, n, d, h))
			add(bn+"attn_v.weight", p.dtype, []int64{n * h, d}, newTransposed(p, 2*n*d*h*es, n, d, h))
		} else {
			q, err := need(lp+"attn/q_einsum", n, d, h)
			if err != nil {
				return err
			}
			kv, err := need(lp+"attn/kv_einsum", 2, k, d, h)
			if err != nil {
				return err
			}
			kves := int64(kv.dtype.TypeSize())
			add(bn+"attn_q.weight", q.dtype, []int64{n * h, d}, newTransposed(q, 0, n, d, h))
			add(bn+"attn_k.weight", kv.dtype, []int64{k * h, d}, newTransposed(kv, 0, k, d, h))
			add(bn+"attn_v.weight", kv.dtype, []int64{k * h, d}, newTransposed(kv, k*d*h*kves, k, d, h))
		}
		o, err := need(lp+"attn/attn_vec_einsum", n, h, d)
		if err != nil {
			return err
		}
		add(bn+"attn_output.weight", o.dtype, []int64{d, n * h}, newTransposed(o, 0, 1, n*h, d))

		// Feed-forward.
		gate, err := need(lp+"mlp/gating_einsum", 2, -1, -1)
		if err != nil {
			return err
		}
		ges := int64(gate.dtype.TypeSize())
		var fd bool // [2, F, D]
		switch {
		case gate.shape[1] == f && gate.shape[2] == d && f != d:
			fd = true
		case gate.shape[1] == d && gate.shape[2] == f && f != d:
			fd = false
		case f == d && gate.shape[1] == d && gate.shape[2] == d:
			// Square: shapes cannot tell; the reference code's layout for
			// the family decides (Gemma 3 transposed the parameter).
			fd = c.Family == ir.Gemma3
			if i == 0 {
				m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("mlp/gating_einsum is [2, %d, %d] with ffn = width: assumed the %s layout %s", d, d, c.Family, map[bool]string{true: "[2, ffn, width]", false: "[2, width, ffn]"}[fd]))
			}
		default:
			return fmt.Errorf("parameter %smlp/gating_einsum (%s) has shape %v, want [2, %d, %d] or [2, %d, %d]", lp, gate.where, gate.shape, f, d, d, f)
		}
		if fd {
			add(bn+"ffn_gate.weight", gate.dtype, []int64{f, d}, win(gate, 0, f*d*ges))
			add(bn+"ffn_up.weight", gate.dtype, []int64{f, d}, win(gate, f*d*ges, f*d*ges))
		} else {
			add(bn+"ffn_gate.weight", gate.dtype, []int64{f, d}, newTransposed(gate, 0, 1, d, f))
			add(bn+"ffn_up.weight", gate.dtype, []int64{f, d}, newTransposed(gate, d*f*ges, 1, d, f))
		}
		lin, err := need(lp+"mlp/linear", f, d)
		if err != nil {
			return err
		}
		add(bn+"ffn_down.weight", lin.dtype, []int64{d, f}, newTransposed(lin, 0, 1, f, d))
	}
	return nil
}

// numpyDType maps a NumPy dtype name to the IR type.
func numpyDType(name string) (ir.DType, error) {
	switch name {
	case "bfloat16":
		return ir.BF16, nil
	case "float16":
		return ir.F16, nil
	case "float32":
		return ir.F32, nil
	case "float64":
		return ir.F64, nil
	case "int8":
		return ir.I8, nil
	case "int16":
		return ir.I16, nil
	case "int32":
		return ir.I32, nil
	case "int64":
		return ir.I64, nil
	}
	return 0, fmt.Errorf("dtype %s has no IR type", name)
}

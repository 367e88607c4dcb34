package pytorch

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/gemmaconv/gemmaconv/ir"
)

// part is one weight of the model as stored: the tensor and, for
// gemma_pytorch's int8 checkpoints, its per-row scaler.
type part struct {
	w, scaler         *TensorRef
	wName, scalerName string
}

// parts is a checkpoint's tensors sorted by role, before the config (and so
// the family-dependent norm names and the qkv split) is known.
type parts struct {
	embed, outNorm, lmHead *part
	layers                 map[int]map[string]*part
}

// gemmaPytorchLayer maps gemma_pytorch's own per-layer module paths to a
// role; the others are Hugging Face's (ir.HFLayerName). "qkv" is the fused
// projection, split in build.
var gemmaPytorchLayer = map[string]string{
	"self_attn.qkv_proj":   "qkv",
	"self_attn.query_norm": "attn_q_norm",
	"self_attn.key_norm":   "attn_k_norm",
}

// gemmaPytorchEmbedder are gemma_pytorch's names for the embedding
// (text_token_embedder in Gemma 3 multimodal checkpoints).
var gemmaPytorchEmbedder = []string{"embedder", "text_token_embedder"}

// gemmaPytorchVision are the prefixes of gemma_pytorch's Gemma 3 vision
// tower and projector.
var gemmaPytorchVision = []string{"siglip_vision_model.", "mm_soft_embedding_norm.", "mm_input_projection."}

// isVision reports whether a tensor belongs to Gemma 3's vision tower or
// projector, by its Hugging Face or gemma_pytorch name.
func isVision(name string) bool {
	if ir.IsHFVision(name) {
		return true
	}
	for _, p := range gemmaPytorchVision {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Buffers that are computed from the config, not weights.
var ropeBuffers = map[string]bool{"freqs_cis": true, "local_freqs_cis": true, "global_freqs_cis": true}

// maxLayers bounds layer numbers in names (Gemma's largest has 62).
const maxLayers = 1 << 12

// collect sorts the state dict's tensors into parts. Names it does not know
// are an error; RoPE buffers and vision tensors are skipped with a note.
func collect(ts []NamedTensor) (*parts, []string, error) {
	p := &parts{layers: map[int]map[string]*part{}}
	var notes, vision, buffers []string
	for _, t := range ts {
		name := t.Name
		if ropeBuffers[name] || strings.HasSuffix(name, ".rotary_emb.inv_freq") {
			buffers = append(buffers, name)
			continue
		}
		if isVision(name) {
			vision = append(vision, name)
			continue
		}
		module, scaler := strings.CutSuffix(name, ".weight_scaler")
		if !scaler {
			var ok bool
			if module, ok = strings.CutSuffix(name, ".weight"); !ok {
				return nil, nil, fmt.Errorf("tensor %s: not a Gemma weight name", quoteName(t.Name))
			}
		}
		role, isGlobal := ir.HFGlobalName(module)
		if slices.Contains(gemmaPytorchEmbedder, module) {
			role, isGlobal = "token_embd", true
		}
		var slot **part
		if isGlobal {
			switch role {
			case "token_embd":
				slot = &p.embed
			case "output_norm":
				slot = &p.outNorm
			default: // "output"
				slot = &p.lmHead
			}
		} else {
			rest, ok := ir.CutHFTextPrefix(module)
			if ok {
				rest, ok = strings.CutPrefix(rest, "layers.")
			}
			if !ok {
				return nil, nil, fmt.Errorf("tensor %s: not a Gemma weight name", quoteName(t.Name))
			}
			num, sub, _ := strings.Cut(rest, ".")
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n >= maxLayers || strconv.Itoa(n) != num {
				return nil, nil, fmt.Errorf("tensor %s: bad layer number", quoteName(t.Name))
			}
			// The family, which decides what HFFamilyNorm is, is known
			// only once every tensor is seen: build resolves it.
			role, ok = gemmaPytorchLayer[sub]
			if !ok && sub == ir.HFFamilyNorm {
				role, ok = sub, true
			}
			if !ok {
				role, ok = ir.HFLayerName(sub, "")
			}
			if !ok {
				return nil, nil, fmt.Errorf("tensor %s: unknown per-layer weight %q", quoteName(t.Name), sub)
			}
			if p.layers[n] == nil {
				p.layers[n] = map[string]*part{}
			}
			lp := p.layers[n][role]
			if lp == nil {
				lp = &part{}
				p.layers[n][role] = lp
			}
			slot = &lp
		}
		if *slot == nil {
			*slot = &part{}
		}
		pt := *slot
		if scaler {
			if pt.scaler != nil {
				return nil, nil, fmt.Errorf("tensor %s: a second scaler for %s (also %s)", quoteName(t.Name), role, pt.scalerName)
			}
			pt.scaler, pt.scalerName = t.TensorRef, t.Name
		} else {
			if pt.w != nil {
				return nil, nil, fmt.Errorf("tensor %s: a second %s weight (also %s)", quoteName(t.Name), role, pt.wName)
			}
			pt.w, pt.wName = t.TensorRef, t.Name
		}
	}
	if len(buffers) > 0 {
		notes = append(notes, fmt.Sprintf("ignored RoPE buffers %s: they are recomputed from the config", brief(buffers)))
	}
	if len(vision) > 0 {
		notes = append(notes, fmt.Sprintf("skipped %d vision tensors (%s ... %s): gemmaconv converts the text decoder only", len(vision), vision[0], vision[len(vision)-1]))
	}
	if p.embed == nil || p.embed.w == nil {
		return nil, nil, fmt.Errorf("no embedding tensor (embedder.weight or model.embed_tokens.weight) in the checkpoint")
	}
	for n, l := range p.layers {
		for role, pt := range l {
			if pt.w == nil {
				return nil, nil, fmt.Errorf("layer %d: %s has a weight_scaler (%s) but no weight", n, role, pt.scalerName)
			}
		}
	}
	return p, notes, nil
}

// family tells the Gemma generation from the tensors present: QK norms
// mean Gemma 3, sandwich norms Gemma 2, neither Gemma 1.
func (p *parts) family() ir.Family {
	fam := ir.Gemma1
	for _, l := range p.layers {
		if l["attn_q_norm"] != nil || l["attn_k_norm"] != nil {
			return ir.Gemma3
		}
		if l["ffn_norm"] != nil || l["post_ffw_norm"] != nil {
			fam = ir.Gemma2
		}
	}
	return fam
}

func (p *parts) numLayers() int {
	n := 0
	for i := range p.layers {
		if i+1 > n {
			n = i + 1
		}
	}
	return n
}

// build adds the model's IR tensors to m, splitting fused qkv projections,
// dequantizing int8 weights and trimming padded embedding rows.
func (p *parts) build(m *ir.Model) error {
	c := m.Config
	note := func(s string) { m.Provenance.Notes = append(m.Provenance.Notes, s) }
	add := func(name string, pt *part) error {
		t, err := irTensor(name, pt)
		if err != nil {
			return err
		}
		m.Tensors = append(m.Tensors, t)
		return nil
	}

	emb := *p.embed
	if rows := emb.w.Shape; len(rows) == 2 && rows[0] > int64(c.Vocab) {
		var err error
		if emb.w, err = emb.w.Rows(0, int64(c.Vocab)); err != nil {
			return fmt.Errorf("tensor %s: %w", emb.wName, err)
		}
		if emb.scaler != nil {
			if emb.scaler, err = emb.scaler.Rows(0, int64(c.Vocab)); err != nil {
				return fmt.Errorf("tensor %s: %w", emb.scalerName, err)
			}
		}
		note(fmt.Sprintf("trimmed %s from %d to the vocab's %d rows (padding)", emb.wName, rows[0], c.Vocab))
	}
	if err := add("token_embd.weight", &emb); err != nil {
		return err
	}
	if p.outNorm == nil {
		return fmt.Errorf("no final norm (model.norm.weight) in the checkpoint")
	}
	if err := add("output_norm.weight", p.outNorm); err != nil {
		return err
	}
	if p.lmHead != nil {
		if c.TiedEmbeddings {
			note(fmt.Sprintf("skipped %s: the config ties embeddings, so the output projection is token_embd", p.lmHead.wName))
		} else if err := add("output.weight", p.lmHead); err != nil {
			return err
		}
	}

	nums := make([]int, 0, len(p.layers))
	for n := range p.layers {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	fused, quant := 0, 0
	for _, n := range nums {
		if n >= c.NumLayers {
			return fmt.Errorf("tensors of layer %d, but the config has %d layers", n, c.NumLayers)
		}
		prefix := fmt.Sprintf("blk.%d.", n)
		roles := make([]string, 0, len(p.layers[n]))
		for r := range p.layers[n] {
			roles = append(roles, r)
		}
		sort.Strings(roles)
		for _, role := range roles {
			pt := p.layers[n][role]
			if pt.scaler != nil {
				quant++
			}
			switch role {
			case "qkv":
				fused++
				if err := p.splitQKV(m, prefix, pt); err != nil {
					return err
				}
				continue
			case ir.HFFamilyNorm:
				var ok bool
				if role, ok = ir.HFLayerName(role, c.Family); !ok {
					return fmt.Errorf("layer %d: no meaning for %s in a %s model", n, ir.HFFamilyNorm, c.Family)
				}
			}
			if err := add(prefix+role+".weight", pt); err != nil {
				return err
			}
		}
	}
	if fused > 0 {
		note(fmt.Sprintf("split %d fused self_attn.qkv_proj weights into attn_q/attn_k/attn_v row ranges", fused))
	}
	if quant > 0 || p.embed.scaler != nil {
		note("dequantized int8 weights to F32 as weight × weight_scaler per row (gemma_pytorch quant checkpoint)")
	}
	return nil
}

// splitQKV turns gemma_pytorch's fused projection, rows [q; k; v], into
// three views of the same storage.
func (p *parts) splitQKV(m *ir.Model, prefix string, pt *part) error {
	c := m.Config
	q, kv := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	if len(pt.w.Shape) != 2 || pt.w.Shape[0] != q+2*kv {
		return fmt.Errorf("tensor %s has shape %v; %d heads and %d kv heads of %d need %d rows", pt.wName, pt.w.Shape, c.NumHeads, c.NumKVHeads, c.HeadDim, q+2*kv)
	}
	for _, s := range []struct {
		name     string
		r0, rows int64
	}{{"attn_q", 0, q}, {"attn_k", q, kv}, {"attn_v", q + kv, kv}} {
		sub := &part{wName: pt.wName, scalerName: pt.scalerName}
		var err error
		if sub.w, err = pt.w.Rows(s.r0, s.rows); err != nil {
			return fmt.Errorf("tensor %s: %w", pt.wName, err)
		}
		if pt.scaler != nil {
			if sub.scaler, err = pt.scaler.Rows(s.r0, s.rows); err != nil {
				return fmt.Errorf("tensor %s: %w", pt.scalerName, err)
			}
		}
		t, err := irTensor(prefix+s.name+".weight", sub)
		if err != nil {
			return err
		}
		m.Tensors = append(m.Tensors, t)
	}
	return nil
}

// irTensor makes the IR tensor for a stored weight: a lazy window of its
// storage in the stored type, or an F32 dequantizing source for int8
// weights with a scaler.
func irTensor(name string, pt *part) (*ir.Tensor, error) {
	w := pt.w
	shape := append([]int64(nil), w.Shape...)
	if pt.scaler != nil {
		if w.DType != Int8 {
			return nil, fmt.Errorf("tensor %s is %s but has a weight_scaler (int8 expected)", pt.wName, w.DType)
		}
		src, err := newDequant(pt)
		if err != nil {
			return nil, err
		}
		return &ir.Tensor{Name: name, DType: ir.F32, Shape: shape, Source: src}, nil
	}
	if w.DType == Int8 {
		return nil, fmt.Errorf("tensor %s is int8 without a weight_scaler to dequantize it", pt.wName)
	}
	dt, ok := w.DType.IR()
	if !ok || !dt.IsFloat() {
		return nil, fmt.Errorf("tensor %s has type %s; Gemma weights must be float32, float16, bfloat16 or float64", pt.wName, w.DType)
	}
	src, err := w.Reader()
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", pt.wName, err)
	}
	return &ir.Tensor{Name: name, DType: dt, Shape: shape, Source: src}, nil
}

// dequant yields row × scaler[row] as little-endian float32, computed when
// read. The scalers (one per row) are read on first use.
type dequant struct {
	name   string
	w      io.ReaderAt
	scaler *TensorRef
	rows   int64
	cols   int64

	once   sync.Once
	scales []float32
	err    error
}

func newDequant(pt *part) (*dequant, error) {
	w, s := pt.w, pt.scaler
	if len(w.Shape) != 2 {
		return nil, fmt.Errorf("int8 tensor %s has shape %v, not a matrix", pt.wName, w.Shape)
	}
	rows := w.Shape[0]
	if s.NumElements() != rows || (len(s.Shape) != 1 && !(len(s.Shape) == 2 && s.Shape[1] == 1)) {
		return nil, fmt.Errorf("scaler %s has shape %v; %s has %d rows", pt.scalerName, s.Shape, pt.wName, rows)
	}
	if dt, ok := s.DType.IR(); !ok || !dt.IsFloat() {
		return nil, fmt.Errorf("scaler %s has type %s, not a float type", pt.scalerName, s.DType)
	}
	r, err := w.Reader()
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", pt.wName, err)
	}
	return &dequant{name: pt.wName, w: r, scaler: s, rows: rows, cols: w.Shape[1]}, nil
}

func (d *dequant) load() error {
	d.once.Do(func() {
		r, err := d.scaler.Reader()
		if err != nil {
			d.err = err
			return
		}
		raw := make([]byte, d.scaler.NBytes())
		if _, err := r.ReadAt(raw, 0); err != nil {
			d.err = fmt.Errorf("reading scaler of %s: %w", d.name, err)
			return
		}
		dt, _ := d.scaler.DType.IR()
		d.scales = make([]float32, d.rows)
		d.err = ir.DecodeFloats(dt, raw, d.scales)
	})
	return d.err
}

func (d *dequant) ReadAt(p []byte, off int64) (int, error) {
	size := d.rows * d.cols * 4
	if len(p) == 0 {
		return 0, nil
	}
	if off < 0 || off >= size {
		return 0, io.EOF
	}
	if err := d.load(); err != nil {
		return 0, err
	}
	want := int64(len(p))
	if want > size-off {
		want = size - off
	}
	e0, e1 := off/4, (off+want+3)/4
	q := make([]byte, e1-e0)
	if _, err := d.w.ReadAt(q, e0); err != nil {
		return 0, fmt.Errorf("tensor %s: %w", d.name, err)
	}
	vals := make([]float32, len(q))
	for i, b := range q {
		e := e0 + int64(i)
		vals[i] = float32(int8(b)) * d.scales[e/d.cols]
	}
	out := make([]byte, 4*len(vals))
	ir.EncodeF32(vals, out)
	n := copy(p[:want], out[off-e0*4:])
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

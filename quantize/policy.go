package quantize

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/ir"
)

// This file is the per-tensor type policy of llama-quantize
// (llama.cpp src/llama-quant.cpp: tensor_allows_quantization,
// llama_tensor_get_type, llama_tensor_get_type_impl, tensor_type_fallback),
// restricted to what can happen for the dense Gemma architectures (no
// experts, no fused QKV, never LLM_TYPE_70B or Falcon). The choices depend
// on the order tensors are visited in (the attn_v and ffn_down counters),
// so Plan visits them in llama-quantize's order, LlamaOrder.

// PlanOptions selects how Plan assigns a type to each tensor. The zero
// value is not useful: FileType must be set.
type PlanOptions struct {
	// FileType is the preset (llama_ftype): Q4_K_M, Q8_0, IQ4_XS, ...
	FileType FileType
	// Pure gives every quantizable tensor the preset's base type, with
	// only the block-size fallbacks (llama-quantize --pure): no k-quant
	// mixture, and token_embd gets the base type too.
	Pure bool
	// Overrides are --tensor-type rules, tried in order; the first whose
	// pattern matches a tensor's name sets its type (then the block-size
	// fallback applies). As in llama-quantize they apply only when the
	// preset's base type is a quantized type.
	Overrides []TensorTypeOverride
	// Imatrix says an importance matrix will be used. llama-quantize then
	// picks differently for a few presets (ffn_down of Q4_0, Q5_0, IQ4_NL,
	// IQ4_XS in the first eighth of the layers).
	Imatrix bool
	// OutputType and TokenEmbeddingType, when not nil, are
	// llama-quantize's --output-tensor-type and --token-embedding-type.
	OutputType, TokenEmbeddingType *ir.DType
	// LeaveOutput keeps output.weight in its source type
	// (--leave-output-tensor).
	LeaveOutput bool
	// AllowRequantize permits converting tensors that are already
	// quantized in the source (--allow-requantize); without it Plan
	// returns an error wrapping ErrRequantize.
	AllowRequantize bool
}

// TensorTypeOverride is one --tensor-type PATTERN=TYPE rule.
type TensorTypeOverride struct {
	// Pattern is matched anywhere in the tensor name (regex_search).
	Pattern *regexp.Regexp
	Type    ir.DType
	// Spec is the rule as written (`blk\.0\.ffn_up=q8_0`), recorded in
	// the gemmaconv.quantize.options stamp; ParseTensorTypeOverride sets it.
	Spec string
}

// ParseTensorTypeOverride parses "PATTERN=TYPE" as llama-quantize's
// --tensor-type does: the pattern is everything before the first '=',
// lower-cased, and compiled as a regular expression (Go's RE2 syntax,
// which agrees with the ECMAScript syntax llama.cpp uses for ordinary
// patterns such as `blk\.[0-3]\.ffn_down` or `attn_v`); the type is a ggml
// type name, case-insensitive.
func ParseTensorTypeOverride(s string) (TensorTypeOverride, error) {
	pat, typ, ok := strings.Cut(s, "=")
	if !ok {
		return TensorTypeOverride{}, fmt.Errorf("tensor type %q: want PATTERN=TYPE", s)
	}
	if pat == "" {
		return TensorTypeOverride{}, fmt.Errorf("tensor type %q: missing tensor name pattern", s)
	}
	if typ == "" {
		return TensorTypeOverride{}, fmt.Errorf("tensor type %q: missing quantization type", s)
	}
	re, err := regexp.Compile(strings.ToLower(pat))
	if err != nil {
		return TensorTypeOverride{}, fmt.Errorf("tensor type %q: %w", s, err)
	}
	t, err := ir.ParseDType(typ)
	if err != nil {
		return TensorTypeOverride{}, fmt.Errorf("tensor type %q: %w", s, err)
	}
	return TensorTypeOverride{Pattern: re, Type: t, Spec: s}, nil
}

// ErrRequantize is wrapped by Plan's error when a tensor that is already
// quantized would be converted to another type without AllowRequantize.
var ErrRequantize = errors.New("requantizing an already quantized tensor is disabled")

// TensorPlan is Plan's decision for one tensor.
type TensorPlan struct {
	Name  string
	Shape []int64
	// From is the source type, To the planned type (equal: copied as is).
	From, To ir.DType
	// Quantizable: llama-quantize's tensor_allows_quantization holds.
	Quantizable bool
	// Override: a --tensor-type rule chose the type.
	Override bool
	// Fallback: the chosen type did not fit the row length, so the
	// fallback table replaced it (Wanted is the type before fallback).
	Fallback bool
	Wanted   ir.DType
}

// Bytes is the tensor's size in the planned type.
func (p TensorPlan) Bytes() int64 { return planBytes(p.To, p.Shape) }

// SourceBytes is the tensor's size in the source type.
func (p TensorPlan) SourceBytes() int64 { return planBytes(p.From, p.Shape) }

func planBytes(t ir.DType, shape []int64) int64 {
	if len(shape) == 0 {
		return 0
	}
	cols := shape[len(shape)-1]
	rb, err := ir.RowBytes(t, cols)
	if err != nil {
		return 0
	}
	rows := int64(1)
	for _, d := range shape[:len(shape)-1] {
		rows *= d
	}
	return rb * rows
}

// BaseType is the default tensor type of a preset
// (llama_ftype_get_default_type).
func BaseType(f FileType) (ir.DType, error) {
	switch f {
	case FileAllF32:
		return ir.F32, nil
	case FileF16:
		return ir.F16, nil
	case FileBF16:
		return ir.BF16, nil
	case FileQ4_0:
		return ir.Q4_0, nil
	case FileQ4_1:
		return ir.Q4_1, nil
	case FileQ5_0:
		return ir.Q5_0, nil
	case FileQ5_1:
		return ir.Q5_1, nil
	case FileQ8_0:
		return ir.Q8_0, nil
	case FileQ2_K:
		return ir.Q2_K, nil
	case FileQ3_K_S, FileQ3_K_M, FileQ3_K_L:
		return ir.Q3_K, nil
	case FileQ4_K_S, FileQ4_K_M:
		return ir.Q4_K, nil
	case FileQ5_K_S, FileQ5_K_M:
		return ir.Q5_K, nil
	case FileQ6_K:
		return ir.Q6_K, nil
	case FileIQ4_NL:
		return ir.IQ4_NL, nil
	case FileIQ4_XS:
		return ir.IQ4_XS, nil
	case FileTQ1_0:
		return ir.TQ1_0, nil
	case FileTQ2_0:
		return ir.TQ2_0, nil
	case FileMXFP4:
		return ir.MXFP4, nil
	}
	return 0, fmt.Errorf("file type %s has no base tensor type", f)
}

// Plan picks each tensor's type as llama-quantize would for opts and
// returns the map Convert takes, with the file type to store as
// general.file_type.
func Plan(m *ir.Model, opts PlanOptions) (map[string]ir.DType, FileType, error) {
	ps, err := PlanTensors(m, opts)
	if err != nil {
		return nil, 0, err
	}
	types := make(map[string]ir.DType, len(ps))
	for _, p := range ps {
		types[p.Name] = p.To
	}
	return types, opts.FileType, nil
}

// planState holds llama-quantize's counters (quantize_state_impl).
type planState struct {
	opts               *PlanOptions
	nAttnV, iAttnV     int
	nFFNDown, iFFNDown int
	hasTiedEmbeddings  bool
	ftype              FileType
	nGQA               int
}

type category int

const (
	catOther category = iota
	catTokenEmbd
	catAttnQ
	catAttnV
	catAttnK
	catAttnQKV
	catAttnKVB
	catAttnOutput
	catFFNUp
	catFFNGate
	catFFNDown
	catOutput
)

// tensorCategory is tensor_get_category: substring tests on the name.
func tensorCategory(name string) category {
	switch {
	case name == "output.weight":
		return catOutput
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
		return catTokenEmbd
	case strings.Contains(name, "attn_qkv.weight"):
		return catAttnQKV
	case strings.Contains(name, "attn_kv_b.weight"):
		return catAttnKVB
	case strings.Contains(name, "attn_v.weight"):
		return catAttnV
	case strings.Contains(name, "attn_k.weight"):
		return catAttnK
	case strings.Contains(name, "attn_q.weight"):
		return catAttnQ
	case strings.Contains(name, "attn_output.weight"):
		return catAttnOutput
	case strings.Contains(name, "ffn_up"):
		return catFFNUp
	case strings.Contains(name, "ffn_gate"):
		return catFFNGate
	case strings.Contains(name, "ffn_down"):
		return catFFNDown
	}
	return catOther
}

// ggmlDims is ggml_n_dims: the number of dimensions once outer dimensions
// of size 1 are dropped (a one-row matrix counts as 1-D).
func ggmlDims(shape []int64) int {
	for i, d := range shape {
		if d != 1 {
			return len(shape) - i
		}
	}
	return 1
}

// allowsQuantization is tensor_allows_quantization for the names a Gemma
// model can have: matrices whose name ends in "weight" other than norms.
func allowsQuantization(t *ir.Tensor, opts *PlanOptions) bool {
	if ggmlDims(t.Shape) < 2 {
		return false
	}
	name := t.Name
	if !strings.HasSuffix(name, "weight") || strings.Contains(name, "_norm.weight") {
		return false
	}
	if opts.LeaveOutput && name == "output.weight" {
		return false
	}
	for _, s := range []string{"ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
		"per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "attn_rel_b.weight",
		".position_embd", ".rel_pos", ".patch_embd", ".patch_merger"} {
		if strings.Contains(name, s) {
			return false
		}
	}
	return name != "position_embd.weight" && name != "token_types.weight"
}

// useMoreBits is llama-quantize's use_more_bits: the first and last eighth
// of the layers and every third layer in between get more bits.
func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// LlamaOrder sorts tensors as llama-quantize visits (and writes) them: by
// layer number, tensors outside blocks first, then by name. The attn_v and
// ffn_down counters of the policy count in this order.
func LlamaOrder(ts []*ir.Tensor) {
	sort.SliceStable(ts, func(i, j int) bool { return llamaLess(ts[i].Name, ts[j].Name) })
}

// llamaLess is llama_model_loader's weight_name_comparer: sscanf("blk.%d.")
// gives the layer (-1 when the name does not start so).
func llamaLess(a, b string) bool {
	la, lb := llamaLayer(a), llamaLayer(b)
	if la != lb {
		return la < lb
	}
	return a < b
}

func llamaLayer(name string) int {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return -1
	}
	// %d stores the number even if the "." after it is missing.
	end := 0
	if end < len(rest) && (rest[end] == '+' || rest[end] == '-') {
		end++
	}
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}

// PlanTensors is Plan with the whole decision per tensor, in
// llama-quantize's order (LlamaOrder).
func PlanTensors(m *ir.Model, opts PlanOptions) ([]TensorPlan, error) {
	base, err := BaseType(opts.FileType)
	if err != nil {
		return nil, err
	}
	ts := append([]*ir.Tensor(nil), m.Tensors...)
	LlamaOrder(ts)
	st := &planState{opts: &opts, ftype: opts.FileType, hasTiedEmbeddings: true}
	if m.Config.NumKVHeads > 0 {
		st.nGQA = m.Config.NumHeads / m.Config.NumKVHeads
	}
	for _, t := range ts {
		switch tensorCategory(t.Name) {
		case catAttnV, catAttnQKV, catAttnKVB:
			st.nAttnV++
		case catOutput:
			st.hasTiedEmbeddings = false
		}
	}
	st.nFFNDown = m.Config.NumLayers

	plans := make([]TensorPlan, 0, len(ts))
	for _, t := range ts {
		p := TensorPlan{Name: t.Name, Shape: append([]int64(nil), t.Shape...), From: t.DType}
		p.Quantizable = allowsQuantization(t, &opts)
		switch {
		case p.Quantizable:
			if err := st.tensorType(t, base, &p); err != nil {
				return nil, err
			}
		case len(t.Shape) == 1 && t.DType.IsFloat():
			// 1-D tensors are F32 in every file llama.cpp's converter
			// writes, the files llama-quantize starts from.
			p.To = ir.F32
		default:
			p.To = t.DType
		}
		if p.Quantizable && requiresImatrix(t.Name, p.To) && !opts.Imatrix {
			return nil, fmt.Errorf("tensor %s: type %s needs an importance matrix (--imatrix)", t.Name, p.To)
		}
		if p.To != p.From {
			if p.From.IsQuantized() && !opts.AllowRequantize {
				return nil, fmt.Errorf("tensor %s is already %s; converting it to %s would requantize: %w (pass --allow-requantize to do it anyway)", t.Name, p.From, p.To, ErrRequantize)
			}
			if !canEncode(p.To) {
				return nil, fmt.Errorf("tensor %s: no quantizer for type %s", t.Name, p.To)
			}
			if !canDecode(p.From) {
				return nil, fmt.Errorf("tensor %s: no decoder for its type %s", t.Name, p.From)
			}
			if _, err := ir.RowBytes(p.To, t.Cols()); err != nil {
				return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
			}
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// requiresImatrix is tensor_requires_imatrix: the very low-bit types are
// garbage without importance weights.
func requiresImatrix(name string, t ir.DType) bool {
	if name == "token_embd.weight" || name == "per_layer_token_embd.weight" || name == "output.weight" {
		return false
	}
	switch t {
	case ir.IQ3_XXS, ir.IQ2_XXS, ir.IQ2_XS, ir.IQ2_S, ir.IQ1_M, ir.IQ1_S:
		return true
	}
	return false
}

// tensorType is llama_tensor_get_type for a quantizable tensor. (In
// llama.cpp a fused QKV tensor counts as attn_v, so its own branch is
// never reached; Gemma has none anyway.)
func (st *planState) tensorType(t *ir.Tensor, base ir.DType, p *TensorPlan) error {
	opts := st.opts
	cat := tensorCategory(t.Name)
	if opts.TokenEmbeddingType != nil && cat == catTokenEmbd {
		p.To, p.Wanted = *opts.TokenEmbeddingType, *opts.TokenEmbeddingType
		return nil
	}
	if opts.OutputType != nil && cat == catOutput {
		p.To, p.Wanted = *opts.OutputType, *opts.OutputType
		return nil
	}
	nt := base
	if !base.IsQuantized() {
		p.To, p.Wanted = nt, nt
		return nil
	}
	manual := false
	for _, o := range opts.Overrides {
		if o.Pattern.MatchString(t.Name) {
			nt = o.Type
			manual = true
			p.Override = true
			break
		}
	}
	if !manual && !opts.Pure {
		nt = st.mixture(t, nt, cat)
	}
	p.Wanted = nt
	out, fell, err := fallback(t, nt)
	if err != nil {
		return err
	}
	p.To, p.Fallback = out, fell
	return nil
}

// fallback is tensor_type_fallback: a type whose block does not divide the
// row length is replaced by one with a 32-value block, and by F16 when even
// that does not fit.
func fallback(t *ir.Tensor, want ir.DType) (ir.DType, bool, error) {
	cols := t.Cols()
	if cols%int64(want.BlockSize()) == 0 {
		return want, false, nil
	}
	var out ir.DType
	switch want {
	case ir.IQ1_S, ir.IQ1_M, ir.IQ2_XXS, ir.IQ2_XS, ir.IQ2_S, ir.IQ3_XXS, ir.IQ3_S, ir.IQ4_XS:
		out = ir.IQ4_NL
	case ir.Q2_K, ir.Q3_K, ir.TQ1_0, ir.TQ2_0:
		out = ir.Q4_0
	case ir.Q4_K:
		out = ir.Q5_0
	case ir.Q5_K:
		out = ir.Q5_1
	case ir.Q6_K:
		out = ir.Q8_0
	default:
		return 0, false, fmt.Errorf("tensor %s: rows of %d values are not a multiple of %s's block of %d, and llama.cpp defines no fallback for %s",
			t.Name, cols, want, want.BlockSize(), want)
	}
	if cols%int64(out.BlockSize()) != 0 {
		out = ir.F16
	}
	return out, true, nil
}

// mixture is llama_tensor_get_type_impl: the preset's per-category
// choices. Branches for presets gemmaconv has no file type for (IQ1, IQ2,
// IQ3, Q2_K_S) and for architectures other than Gemma's (experts, Falcon,
// 70B) are left out; they can never be taken here.
func (st *planState) mixture(t *ir.Tensor, nt ir.DType, cat category) ir.DType {
	f := st.ftype
	switch {
	case cat == catOutput || (st.hasTiedEmbeddings && cat == catTokenEmbd):
		if st.opts.OutputType != nil {
			return *st.opts.OutputType
		}
		switch {
		case f == FileMXFP4:
			return ir.Q8_0
		case t.Cols()%int64(nt.BlockSize()) != 0:
			return ir.Q8_0
		case nt != ir.Q8_0:
			return ir.Q6_K
		}
		return nt
	case f == FileMXFP4:
		// Dense tensors of the MXFP4_MOE preset are Q8_0 (only 3-D expert
		// tensors get MXFP4).
		if len(t.Shape) >= 3 && t.Shape[len(t.Shape)-3] > 1 {
			return ir.MXFP4
		}
		return ir.Q8_0
	case cat == catTokenEmbd:
		if st.opts.TokenEmbeddingType != nil {
			return *st.opts.TokenEmbeddingType
		}
		if f == FileTQ1_0 || f == FileTQ2_0 {
			return ir.Q4_K
		}
		return nt
	case cat == catAttnV || cat == catAttnQKV || cat == catAttnKVB:
		switch {
		case f == FileQ2_K:
			if st.nGQA >= 4 {
				nt = ir.Q4_K
			} else {
				nt = ir.Q3_K
			}
		case f == FileQ3_K_M:
			if st.iAttnV < 2 {
				nt = ir.Q5_K
			} else {
				nt = ir.Q4_K
			}
		case f == FileQ3_K_L:
			nt = ir.Q5_K
		case (f == FileIQ4_NL || f == FileIQ4_XS) && st.nGQA >= 4:
			nt = ir.Q5_K
		case (f == FileQ4_K_M || f == FileQ5_K_M) && useMoreBits(st.iAttnV, st.nAttnV):
			nt = ir.Q6_K
		case f == FileQ4_K_S && st.iAttnV < 4:
			nt = ir.Q5_K
		}
		st.iAttnV++
		return nt
	case cat == catFFNDown:
		i, n := st.iFFNDown, st.nFFNDown
		switch {
		case f == FileQ2_K:
			nt = ir.Q3_K
		case f == FileQ3_K_M:
			if i < n/16 {
				nt = ir.Q5_K
			} else {
				// llama.cpp keeps Q3_K here only for Falcon.
				nt = ir.Q4_K
			}
		case f == FileQ3_K_L:
			nt = ir.Q5_K
		case f == FileQ4_K_M:
			if useMoreBits(i, n) {
				nt = ir.Q6_K
			}
		case i < n/8 && (f == FileIQ4_NL || f == FileIQ4_XS) && !st.opts.Imatrix:
			nt = ir.Q5_K
		case f == FileQ5_K_M && useMoreBits(i, n):
			nt = ir.Q6_K
		case f == FileQ4_K_S && i < n/8:
			nt = ir.Q5_K
		case (f == FileQ4_0 || f == FileQ5_0) && st.opts.Imatrix && i < n/8:
			if f == FileQ4_0 {
				nt = ir.Q4_1
			} else {
				nt = ir.Q5_1
			}
		}
		st.iFFNDown++
		return nt
	case cat == catAttnOutput:
		switch f {
		case FileQ2_K:
			return ir.Q3_K
		case FileQ3_K_M:
			return ir.Q4_K
		case FileQ3_K_L:
			return ir.Q5_K
		}
		return nt
	}
	return nt
}

package quantize

import (
	"fmt"
	"math"
	"sort"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Imatrix is an importance matrix as Prepare takes it. Package quantize
// imports no file format: formats/gguf's ReadImatrix reads llama-imatrix's
// GGUF and legacy .dat files into a gguf.Imatrix, which has these fields.
type Imatrix struct {
	// Path names the file as the user gave it; it is stamped as
	// quantize.imatrix.file and hashed into gemmaconv.imatrix.sha256.
	Path string
	// Weights maps a tensor name to one importance weight per column
	// (gguf.Imatrix.Weights).
	Weights map[string][]float32
	// Datasets names the texts the statistics were collected on; the
	// first is stamped as quantize.imatrix.dataset.
	Datasets []string
	// Entries is the number of entries in the file; Chunks the number of
	// chunks processed (0: unknown, not stamped).
	Entries int
	Chunks  uint32
}

// Options configures Prepare.
type Options struct {
	// Plan selects each tensor's type; Prepare sets Plan.Imatrix from
	// Imatrix.
	Plan PlanOptions
	// Threads is the number of workers that quantize rows and hash source
	// files; 0 means all cores. The output does not depend on it.
	Threads int
	// Imatrix, when not nil, weights the quantizers.
	Imatrix *Imatrix
	// Version is stamped as gemmaconv.version.
	Version string
	// NoSourceHash leaves out gemmaconv.source.sha256, which costs one
	// read of the source files.
	NoSourceHash bool
	// DryRun stops after planning: the Result has no Model, and no tensor
	// data or source file is read.
	DryRun bool
}

// Result is what Prepare planned and built. Its models share the source
// model's resources: use them while it is open and close only it.
type Result struct {
	// Model is the quantized model, ready for gguf.Write: tensors in
	// llama-quantize's order, converted lazily as they are read, and its
	// metadata stamped (docs/quantize.md). Nil for a dry run.
	Model *ir.Model
	// Source is the source model in GGUF's norm convention (norms hold
	// 1+w, F32): what Model's tensors are converted from and what they are
	// compared with.
	Source *ir.Model
	// Plans holds each tensor's decision, in llama-quantize's order.
	Plans []TensorPlan
	// FileType is the preset, stored as general.file_type.
	FileType FileType
	// Options is the gemmaconv.quantize.options stamp: the plan options
	// that differ from the preset's defaults.
	Options []string
	// ImatrixMissing names the quantized tensors the importance matrix has
	// no weights for; they are quantized unweighted.
	ImatrixMissing []string
}

// ImatrixError is Prepare's error for an importance matrix that does not
// fit the model (a bad input file rather than a failure).
type ImatrixError struct {
	// Path is Imatrix.Path.
	Path string
	Err  error
}

// Error returns the path and what does not fit.
func (e *ImatrixError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *ImatrixError) Unwrap() error { return e.Err }

// Prepare is the quantize pipeline up to writing: it converts src's norms
// to GGUF's 1+w convention, plans every tensor's type as llama-quantize
// would (PlanTensors), picks each quantized tensor's importance weights,
// sets up the conversion (Convert) in llama-quantize's tensor order and
// stamps the metadata llama-quantize writes plus gemmaconv's provenance
// keys. Only the provenance hashes read data now; the tensors are
// converted as the writer reads them. Errors wrap ErrRequantize for an
// already quantized source without AllowRequantize, and are an
// *ImatrixError for an importance matrix that does not fit.
func Prepare(src *ir.Model, opts Options) (*Result, error) {
	gm, err := ir.WithNormOffset(src, 0)
	if err != nil {
		return nil, err
	}
	po := opts.Plan
	po.Imatrix = opts.Imatrix != nil
	plans, err := PlanTensors(gm, po)
	if err != nil {
		return nil, err
	}
	res := &Result{Source: gm, Plans: plans, FileType: po.FileType, Options: optionStamps(po)}
	if opts.DryRun {
		return res, nil
	}
	types := make(map[string]ir.DType, len(plans))
	for _, p := range plans {
		types[p.Name] = p.To
	}
	var weights map[string][]float32
	if opts.Imatrix != nil {
		weights, res.ImatrixMissing, err = imatrixWeights(opts.Imatrix.Weights, plans)
		if err != nil {
			return nil, &ImatrixError{Path: opts.Imatrix.Path, Err: err}
		}
	}
	cm, err := Convert(gm, types, ConvertOptions{Threads: opts.Threads, Imatrix: weights})
	if err != nil {
		return nil, err
	}
	LlamaOrder(cm.Tensors)
	if err := stampMetadata(cm, src, res, opts); err != nil {
		return nil, err
	}
	res.Model = cm
	return res, nil
}

// imatrixWeights picks the importance weights of the tensors being
// converted, as llama-quantize does: a tensor without an entry is
// quantized unweighted (and listed in missing); an entry of the wrong
// length is an error, except for token_embd (whose entry llama.cpp
// ignores); non-finite weights anywhere are an error.
func imatrixWeights(all map[string][]float32, plans []TensorPlan) (weights map[string][]float32, missing []string, err error) {
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range all[n] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, nil, fmt.Errorf("imatrix contains non-finite value %v (entry %s)", v, n)
			}
		}
	}
	weights = map[string][]float32{}
	for _, p := range plans {
		if p.To == p.From || !p.Quantizable {
			continue
		}
		w, ok := all[p.Name]
		if !ok {
			missing = append(missing, p.Name)
			continue
		}
		cols := p.Shape[len(p.Shape)-1]
		if int64(len(w)) != cols {
			if p.Name == "token_embd.weight" || p.Name == "per_layer_token_embd.weight" {
				continue
			}
			return nil, nil, fmt.Errorf("imatrix size %d is different from tensor size %d for %s", len(w), cols, p.Name)
		}
		weights[p.Name] = w
	}
	return weights, missing, nil
}

// optionStamps lists the plan options that differ from the preset's
// defaults, as gemmaconv.quantize.options records them: --tensor-type
// rules as written, then the output and token embedding types, pure,
// leave-output-tensor and allow-requantize.
func optionStamps(po PlanOptions) []string {
	var out []string
	for _, o := range po.Overrides {
		spec := o.Spec
		if spec == "" {
			spec = o.Pattern.String() + "=" + o.Type.String()
		}
		out = append(out, "tensor-type="+spec)
	}
	if po.OutputType != nil {
		out = append(out, "output-tensor-type="+po.OutputType.String())
	}
	if po.TokenEmbeddingType != nil {
		out = append(out, "token-embedding-type="+po.TokenEmbeddingType.String())
	}
	if po.Pure {
		out = append(out, "pure")
	}
	if po.LeaveOutput {
		out = append(out, "leave-output-tensor")
	}
	if po.AllowRequantize {
		out = append(out, "allow-requantize")
	}
	return out
}

// PlanTotals sums a plan: what --dry-run and quantize's summary report.
type PlanTotals struct {
	Tensors int
	// Bytes is the planned size, SourceBytes the size in the source
	// types, Elements the number of weights.
	Bytes, SourceBytes, Elements int64
	// Fallbacks counts the tensors whose rows did not fit the wanted
	// type's block size.
	Fallbacks int
}

// Totals sums plans.
func Totals(plans []TensorPlan) PlanTotals {
	t := PlanTotals{Tensors: len(plans)}
	for _, p := range plans {
		n := int64(1)
		for _, d := range p.Shape {
			n *= d
		}
		t.Elements += n
		t.Bytes += p.Bytes()
		t.SourceBytes += p.SourceBytes()
		if p.Fallback {
			t.Fallbacks++
		}
	}
	return t
}

// BitsPerWeight is bytes spread over the plan's weights, in bits.
func (t PlanTotals) BitsPerWeight(bytes int64) float64 {
	return float64(bytes) * 8 / float64(max(t.Elements, 1))
}

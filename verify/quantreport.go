package verify

import (
	"fmt"
	"math"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// QuantizeReport is the table gemmaconv quantize --report writes: every
// tensor of the quantized file with its type, size and error against the
// source, and totals (docs/quantize.md). CompareQuantized fills Tensors
// and the totals; the caller names Source, Output, Preset and Options.
type QuantizeReport struct {
	Source  string           `json:"source"`
	Output  string           `json:"output"`
	Preset  string           `json:"preset"`
	Options []string         `json:"options,omitempty"`
	Tensors []QuantizeTensor `json:"tensors"`
	// Bytes is the tensors' size in the file, SourceBytes their size in
	// the source types, Parameters the number of weights.
	Bytes       int64 `json:"bytes"`
	SourceBytes int64 `json:"source_bytes"`
	Parameters  int64 `json:"parameters"`
	// BitsPerWeight is Bytes spread over Parameters; RMSE the root mean
	// square error over every weight of every tensor.
	BitsPerWeight float64 `json:"bits_per_weight"`
	RMSE          float64 `json:"rmse"`
}

// QuantizeTensor is one row of a QuantizeReport.
type QuantizeTensor struct {
	Name       string  `json:"name"`
	Type       string  `json:"type"`
	SourceType string  `json:"source_type"`
	Shape      []int64 `json:"shape"`
	Bytes      int64   `json:"bytes"`
	// RMSE is the root mean square difference between the dequantized
	// tensor and the source tensor (values as the artifact stores them:
	// for a GGUF, norms as 1+w); MaxAbsError the largest difference;
	// SourceRMS the source's own root mean square, for scale.
	RMSE        float64 `json:"rmse"`
	MaxAbsError float64 `json:"max_abs_error"`
	SourceRMS   float64 `json:"source_rms"`
	// Fallback and Override are the tensor's plan's flags.
	Fallback bool `json:"fallback,omitempty"`
	Override bool `json:"override,omitempty"`
}

// CompareQuantized compares every tensor of a quantized artifact with its
// source tensor as CompareTensors does (streaming row chunks, tensors in
// parallel) and tabulates the result with plans' flags and source sizes.
// Rows are in llama-quantize's tensor order (quantize.LlamaOrder), the
// order gemmaconv quantize writes, whatever order the reader gives.
// Unlike CompareTensors it requires every artifact tensor to have a
// source tensor of the same shape and both types to be decodable. Only
// opts.Workers and opts.Progress matter: the report applies no floors.
func CompareQuantized(artifact, source *ir.Model, plans []quantize.TensorPlan, opts TensorOptions) (*QuantizeReport, error) {
	a := artifact.Derive()
	quantize.LlamaOrder(a.Tensors)
	for _, t := range a.Tensors {
		s := source.Tensor(t.Name)
		if s == nil {
			return nil, fmt.Errorf("report: %s: tensor %s has no source tensor", artifact.Provenance.Path, t.Name)
		}
		if !sameShape(t.Shape, s.Shape) {
			return nil, fmt.Errorf("report: %s: tensor %s: shape %v, source %v", artifact.Provenance.Path, t.Name, t.Shape, s.Shape)
		}
	}
	results, err := CompareTensors(a, source, opts)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]quantize.TensorPlan, len(plans))
	for _, p := range plans {
		byName[p.Name] = p
	}
	rep := &QuantizeReport{Tensors: make([]QuantizeTensor, len(results))}
	var sse float64
	for i, r := range results {
		if r.Rule == "undecodable" {
			return nil, fmt.Errorf("report: tensor %s: %s", r.Name, r.Reason)
		}
		p := byName[r.Name]
		t := a.Tensors[i]
		rep.Tensors[i] = QuantizeTensor{Name: r.Name, Type: r.Type, SourceType: r.SourceType, Shape: r.Shape, Bytes: t.Size(),
			RMSE: float64(r.RMSE), MaxAbsError: float64(r.MaxAbs), SourceRMS: float64(r.RefRMS), Fallback: p.Fallback, Override: p.Override}
		rep.Bytes += t.Size()
		rep.SourceBytes += p.SourceBytes()
		rep.Parameters += r.Elements
		sse += r.sse
	}
	rep.BitsPerWeight = float64(rep.Bytes) * 8 / float64(max(rep.Parameters, 1))
	rep.RMSE = math.Sqrt(sse / float64(max(rep.Parameters, 1)))
	return rep, nil
}

package verify

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// TestCompareQuantized checks the --report table against statistics
// computed here directly from the decoded values.
func TestCompareQuantized(t *testing.T) {
	src := &ir.Model{Tensors: []*ir.Tensor{
		memTensor(t, "blk.1.ffn_up.weight", ir.F32, []int64{4, 256}, gaussian(1024, 0.02, 1)),
		memTensor(t, "blk.10.attn_q.weight", ir.F32, []int64{3, 256}, gaussian(768, 0.05, 2)),
		memTensor(t, "blk.2.attn_norm.weight", ir.F32, []int64{256}, gaussian(256, 1, 3)),
		memTensor(t, "token_embd.weight", ir.BF16, []int64{8, 64}, gaussian(512, 0.1, 4)),
	}}
	types := map[string]ir.DType{"blk.1.ffn_up.weight": ir.Q4_K, "blk.10.attn_q.weight": ir.Q8_0, "token_embd.weight": ir.Q5_0}
	art, err := quantize.Convert(src, types, quantize.ConvertOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	plans := []quantize.TensorPlan{
		{Name: "blk.1.ffn_up.weight", Shape: []int64{4, 256}, From: ir.F32, To: ir.Q4_K, Override: true},
		{Name: "token_embd.weight", Shape: []int64{8, 64}, From: ir.BF16, To: ir.Q5_0, Fallback: true, Wanted: ir.Q6_K},
	}
	rep, err := CompareQuantized(art, src, plans, TensorOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	order := []string{"token_embd.weight", "blk.1.ffn_up.weight", "blk.2.attn_norm.weight", "blk.10.attn_q.weight"}
	if len(rep.Tensors) != len(order) {
		t.Fatalf("%d rows", len(rep.Tensors))
	}
	var sse float64
	var params, nbytes int64
	for i, row := range rep.Tensors {
		if row.Name != order[i] {
			t.Errorf("row %d is %s, want %s (llama-quantize's order)", i, row.Name, order[i])
		}
		a, s := art.Tensor(row.Name), src.Tensor(row.Name)
		va, vs := decodeAll(t, a), decodeAll(t, s)
		var d2, s2, mx float64
		for j := range va {
			d := float64(va[j]) - float64(vs[j])
			d2 += d * d
			s2 += float64(vs[j]) * float64(vs[j])
			mx = math.Max(mx, math.Abs(d))
		}
		n := float64(len(va))
		if row.RMSE != math.Sqrt(d2/n) || row.SourceRMS != math.Sqrt(s2/n) || row.MaxAbsError != mx {
			t.Errorf("%s: rmse %g, source rms %g, max %g; want %g %g %g", row.Name, row.RMSE, row.SourceRMS, row.MaxAbsError, math.Sqrt(d2/n), math.Sqrt(s2/n), mx)
		}
		if row.Type != a.DType.String() || row.SourceType != s.DType.String() || row.Bytes != a.Size() {
			t.Errorf("row %+v", row)
		}
		sse += d2
		params += int64(len(va))
		nbytes += a.Size()
	}
	if rep.Tensors[2].RMSE != 0 || rep.Tensors[1].RMSE == 0 {
		t.Errorf("unchanged F32 norm rmse %g, Q4_K rmse %g", rep.Tensors[2].RMSE, rep.Tensors[1].RMSE)
	}
	if !rep.Tensors[0].Fallback || rep.Tensors[0].Override || !rep.Tensors[1].Override || rep.Tensors[3].Fallback {
		t.Errorf("plan flags %+v", rep.Tensors)
	}
	wantSrcBytes := int64(8*64*2 + 4*256*4) // only the planned tensors
	if rep.Bytes != nbytes || rep.Parameters != params || rep.SourceBytes != wantSrcBytes ||
		rep.RMSE != math.Sqrt(sse/float64(params)) || rep.BitsPerWeight != float64(nbytes)*8/float64(params) {
		t.Errorf("totals %+v; want bytes %d, parameters %d, source bytes %d, rmse %g", rep, nbytes, params, wantSrcBytes, math.Sqrt(sse/float64(params)))
	}

	// Every artifact tensor needs a source tensor of its shape.
	short := &ir.Model{Tensors: src.Tensors[1:]}
	if _, err := CompareQuantized(art, short, plans, TensorOptions{}); err == nil || !strings.Contains(err.Error(), "blk.1.ffn_up.weight has no source tensor") {
		t.Errorf("missing source tensor: %v", err)
	}
	other := &ir.Model{Tensors: append([]*ir.Tensor{memTensor(t, "blk.1.ffn_up.weight", ir.F32, []int64{2, 512}, gaussian(1024, 1, 5))}, src.Tensors[1:]...)}
	if _, err := CompareQuantized(art, other, plans, TensorOptions{}); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("shape mismatch: %v", err)
	}
	if err := quantize.DecodeRows(ir.IQ2_XXS, make([]byte, 66), make([]float32, 256)); err != nil {
		bad := &ir.Model{Tensors: []*ir.Tensor{{Name: "blk.10.attn_q.weight", DType: ir.IQ2_XXS, Shape: []int64{3, 256}, Source: bytes.NewReader(make([]byte, 3*66))}}}
		if _, err := CompareQuantized(bad, src, nil, TensorOptions{}); err == nil || !strings.Contains(err.Error(), "IQ2_XXS") {
			t.Errorf("undecodable: %v", err)
		}
	}
}

func decodeAll(t *testing.T, x *ir.Tensor) []float32 {
	t.Helper()
	raw := make([]byte, x.Size())
	if err := x.ReadRows(0, x.Rows(), raw); err != nil {
		t.Fatal(err)
	}
	v := make([]float32, x.NumElements())
	if err := quantize.DecodeRows(x.DType, raw, v); err != nil {
		t.Fatal(err)
	}
	return v
}

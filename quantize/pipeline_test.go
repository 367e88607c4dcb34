package quantize

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

func TestParsePreset(t *testing.T) {
	for name, want := range map[string]FileType{"q4_k": FileQ4_K_M, "Q5_K": FileQ5_K_M, "Q3_K": FileQ3_K_M, "q8_0": FileQ8_0,
		"IQ4_xs": FileIQ4_XS, "MXFP4": FileMXFP4, "mxfp4_moe": FileMXFP4, "bf16": FileBF16, "Q3_K_S": FileQ3_K_S} {
		if ft, err := ParsePreset(name); err != nil || ft != want {
			t.Errorf("preset %s: %v, %v; want %v", name, ft, err, want)
		}
	}
	for _, name := range PresetNames() {
		if _, err := ParsePreset(name); err != nil {
			t.Errorf("preset %s: %v", name, err)
		}
	}
	for _, bad := range []string{"Q9_K", "IQ2_XXS", "Q4_K_X", ""} {
		if _, err := ParsePreset(bad); err == nil || !strings.Contains(err.Error(), "not a preset") {
			t.Errorf("preset %q: %v", bad, err)
		}
	}
}

// writeFile writes data to dir/name (making parent directories) and
// returns the path and the data's sha256.
func writeFile(t *testing.T, dir, name, data string) (string, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(data))
	return p, hex.EncodeToString(sum[:])
}

// TestPrepareMetadata checks the stamps: llama-quantize's keys, then
// gemmaconv's provenance, with an earlier step's gemmaconv.* keys dropped.
func TestPrepareMetadata(t *testing.T) {
	dir := t.TempDir()
	a, sumA := writeFile(t, dir, "model-1.safetensors", "first shard")
	b, sumB := writeFile(t, dir, "sub/model-2.safetensors", "second shard")
	imPath, sumIm := writeFile(t, dir, strings.Repeat("i", 140)+".gguf", "imatrix bytes")
	m := planModel(tinyGemma3, ir.BF16)
	m.Config.NormOffset = 1
	m.Provenance = ir.Provenance{Format: "safetensors", Path: dir, Files: []string{a, b, a}}
	m.Extra = []ir.KV{{Key: "general.name", Value: "tiny"}, {Key: KeyVersion, Value: "0.0.1"}, {Key: KeySourceSHA256, Value: []string{"stale"}}}

	over, err := ParseTensorTypeOverride(`blk\.0\.ffn_up=q8_0`)
	if err != nil {
		t.Fatal(err)
	}
	q5 := ir.Q5_K
	weights := map[string][]float32{"blk.0.attn_q.weight": make([]float32, 256)}
	im := &Imatrix{Path: imPath, Weights: weights, Datasets: []string{strings.Repeat("d", 200), "other"}, Entries: 7, Chunks: 12}
	opts := Options{Plan: PlanOptions{FileType: FileQ4_K_M, Overrides: []TensorTypeOverride{over}, OutputType: &q5, Pure: true, AllowRequantize: true},
		Threads: 2, Imatrix: im, Version: "9.9.9"}
	res, err := Prepare(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	cm := res.Model
	if res.FileType != FileQ4_K_M || res.Source.Config.NormOffset != 0 || cm.Config.NormOffset != 0 {
		t.Errorf("file type %s, norm offsets %g %g", res.FileType, res.Source.Config.NormOffset, cm.Config.NormOffset)
	}
	if nt := res.Source.Tensor("blk.0.attn_norm.weight"); nt == nil || nt.DType != ir.F32 {
		t.Errorf("source norm %+v: want F32 with 1+w", nt)
	}
	wantOpts := []string{`tensor-type=blk\.0\.ffn_up=q8_0`, "output-tensor-type=Q5_K", "pure", "allow-requantize"}
	if !slices.Equal(res.Options, wantOpts) {
		t.Errorf("options %q, want %q", res.Options, wantOpts)
	}
	var keys []string
	for _, kv := range cm.Extra {
		keys = append(keys, kv.Key)
	}
	wantKeys := []string{"general.name", "general.file_type", KeyImatrixFile, KeyImatrixDataset, KeyImatrixEntries, KeyImatrixChunks,
		KeyVersion, KeyPreset, KeyOptions, KeySourceFormat, KeySourceFiles, KeySourceSHA256, KeyImatrixSHA256}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("keys\n got %v\nwant %v", keys, wantKeys)
	}
	for key, want := range map[string]any{
		"general.file_type": uint32(FileQ4_K_M), KeyImatrixFile: imPath[:127], KeyImatrixDataset: strings.Repeat("d", 127),
		KeyImatrixEntries: uint32(7), KeyImatrixChunks: uint32(12), KeyVersion: "9.9.9", KeyPreset: "Q4_K_M",
		KeySourceFormat: "safetensors", KeyImatrixSHA256: sumIm,
	} {
		if v, _ := cm.Lookup(key); v != want {
			t.Errorf("%s = %v, want %v", key, v, want)
		}
	}
	for key, want := range map[string][]string{KeyOptions: wantOpts, KeySourceFiles: {"model-1.safetensors", "sub/model-2.safetensors"}, KeySourceSHA256: {sumA, sumB}} {
		if v, _ := cm.Lookup(key); !slices.Equal(v.([]string), want) {
			t.Errorf("%s = %v, want %v", key, v, want)
		}
	}
	// The stamps are the model's, not the source's.
	if v, _ := m.Lookup(KeyVersion); v != "0.0.1" {
		t.Errorf("the source model's stamps changed: %v", v)
	}

	// Written in llama-quantize's order, as planned.
	var names, planned []string
	for _, tn := range cm.Tensors {
		names = append(names, tn.Name)
	}
	for _, p := range res.Plans {
		planned = append(planned, p.Name)
		if got := cm.Tensor(p.Name); got == nil || got.DType != p.To {
			t.Errorf("%s: converted to %v, planned %s", p.Name, got, p.To)
		}
	}
	if !slices.Equal(names, planned) || names[0] != "output_norm.weight" {
		t.Errorf("tensor order %v, plans %v", names[:3], planned[:3])
	}
	if len(res.ImatrixMissing) == 0 || slices.Contains(res.ImatrixMissing, "blk.0.attn_q.weight") {
		t.Errorf("imatrix missing %v", res.ImatrixMissing)
	}

	// --no-source-hash; a file path as the source root.
	opts.NoSourceHash, opts.Imatrix = true, nil
	m.Provenance = ir.Provenance{Format: "safetensors", Path: a, Files: []string{a}}
	res, err = Prepare(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Model.Lookup(KeySourceSHA256); ok {
		t.Error("source sha256 stamped with NoSourceHash")
	}
	if _, ok := res.Model.Lookup(KeyImatrixFile); ok {
		t.Error("imatrix keys without an imatrix")
	}
	if v, _ := res.Model.Lookup(KeySourceFiles); !slices.Equal(v.([]string), []string{"model-1.safetensors"}) {
		t.Errorf("source files %v", v)
	}
}

// TestPrepareDryRunAndErrors: a dry run reads nothing; hashing, plan and
// imatrix errors surface with what failed.
func TestPrepareDryRunAndErrors(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "gone.safetensors")
	m := planModel(tinyGemma2, ir.BF16)
	m.Provenance = ir.Provenance{Format: "safetensors", Path: filepath.Dir(gone), Files: []string{gone}}
	opts := Options{Plan: PlanOptions{FileType: FileQ8_0}, DryRun: true}
	res, err := Prepare(m, opts)
	if err != nil || res.Model != nil || len(res.Plans) != len(m.Tensors) {
		t.Fatalf("dry run: %v, %+v", err, res)
	}
	opts.DryRun = false
	if _, err := Prepare(m, opts); err == nil || !strings.Contains(err.Error(), "gone.safetensors") {
		t.Errorf("missing source file: %v", err)
	}
	opts.NoSourceHash = true
	if _, err := Prepare(m, opts); err != nil {
		t.Errorf("missing source file, no hash: %v", err)
	}

	q := planModel(tinyGemma2, ir.Q4_0)
	if _, err := Prepare(q, opts); !errors.Is(err, ErrRequantize) {
		t.Errorf("requantize: %v", err)
	}

	for _, tc := range []struct {
		weights map[string][]float32
		want    string
	}{
		{map[string][]float32{"blk.1.ffn_up.weight": {1, float32(math.NaN())}}, "non-finite value NaN (entry blk.1.ffn_up.weight)"},
		{map[string][]float32{"blk.1.ffn_up.weight": {float32(math.Inf(1))}}, "non-finite value +Inf"},
		{map[string][]float32{"blk.1.ffn_up.weight": make([]float32, 100)}, "imatrix size 100 is different from tensor size 256 for blk.1.ffn_up.weight"},
	} {
		opts.Imatrix = &Imatrix{Path: "im.gguf", Weights: tc.weights}
		_, err := Prepare(m, opts)
		var ie *ImatrixError
		if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), "im.gguf: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("imatrix %v: %v; want an ImatrixError saying %q", tc.weights, err, tc.want)
		}
	}
}

// TestImatrixWeights: llama-quantize's rules for picking importance
// weights.
func TestImatrixWeights(t *testing.T) {
	m := planModel(tinyGemma2, ir.BF16)
	plans, err := PlanTensors(m, PlanOptions{FileType: FileQ4_K_M, Imatrix: true})
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]float32{
		"blk.0.attn_q.weight":    make([]float32, 256),
		"token_embd.weight":      make([]float32, 3), // wrong length: ignored, as llama.cpp does
		"blk.0.attn_norm.weight": make([]float32, 256),
		"unrelated.weight":       {1},
	}
	w, missing, err := imatrixWeights(all, plans)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 1 || w["blk.0.attn_q.weight"] == nil {
		t.Errorf("weights for %v", w)
	}
	if slices.Contains(missing, "token_embd.weight") || slices.Contains(missing, "blk.0.attn_q.weight") ||
		!slices.Contains(missing, "blk.0.attn_k.weight") || slices.Contains(missing, "blk.0.attn_norm.weight") {
		t.Errorf("missing %v", missing)
	}
}

func TestTotals(t *testing.T) {
	plans := []TensorPlan{
		{Name: "a", Shape: []int64{2, 32}, From: ir.F32, To: ir.Q8_0},
		{Name: "b", Shape: []int64{64}, From: ir.F32, To: ir.F32, Fallback: true},
	}
	tot := Totals(plans)
	want := PlanTotals{Tensors: 2, Bytes: 2*34 + 256, SourceBytes: 2*32*4 + 256, Elements: 128, Fallbacks: 1}
	if tot != want {
		t.Errorf("totals %+v, want %+v", tot, want)
	}
	if got := tot.BitsPerWeight(tot.Bytes); got != float64(want.Bytes)*8/128 {
		t.Errorf("bits per weight %g", got)
	}
	if (PlanTotals{}).BitsPerWeight(10) != 80 {
		t.Error("bits per weight of nothing")
	}
}

func TestRelName(t *testing.T) {
	dir := t.TempDir()
	f, _ := writeFile(t, dir, "m.gguf", "x")
	for _, tc := range []struct{ root, p, want string }{
		{dir, filepath.Join(dir, "a", "b.safetensors"), "a/b.safetensors"},
		{f, f, "m.gguf"},
		{filepath.Join(dir, "a"), filepath.Join(dir, "elsewhere.bin"), "elsewhere.bin"},
	} {
		if got := relName(tc.root, tc.p); got != tc.want {
			t.Errorf("relName(%s, %s) = %s, want %s", tc.root, tc.p, got, tc.want)
		}
	}
}

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/internal/llamaref"
	"github.com/gemmaconv/gemmaconv/internal/testmodel"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/verify"
)

// runQuantizeCmd runs "quantize args..." and returns stdout and the error.
func runQuantizeCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newQuantizeCmd(&globalFlags{quiet: true})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return -1
	}
	return 0
}

// tinyHF writes a small random Gemma 2 checkpoint (hidden 64, so the
// k-quants fall back to 32-value blocks).
func tinyHF(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hf")
	if err := testmodel.WriteHF(dir, testmodel.TinyConfig(ir.Gemma2), 7, ir.BF16); err != nil {
		t.Skip("cannot synthesize a test model: ", err)
	}
	return dir
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestQuantizeBadFlags(t *testing.T) {
	src := tinyHF(t)
	out := filepath.Join(t.TempDir(), "out.gguf")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{src, "-o", out, "--bits", "3"}, "--bits 3"},
		{[]string{src, "--bits", "3"}, "--bits 3"},
		{[]string{src, "-o", out, "--bits", "3", "--type", "Q3_K_M"}, "--bits 3"},
		{[]string{src, "-o", out, "--type", "Q9_K"}, "not a preset"},
		{[]string{src, "-o", out, "--type", "IQ2_XXS"}, "not a preset"},
		{[]string{src}, "-o OUT.gguf is required"},
		{[]string{src, "-o", out, "--tensor-type", "attn_v"}, "PATTERN=TYPE"},
		{[]string{src, "-o", out, "--tensor-type", "attn_v=Q7_0"}, "unknown tensor type"},
		{[]string{src, "-o", out, "--tensor-type", "(attn=Q8_0"}, "tensor type"},
		{[]string{src, "-o", out, "--threads", "-2"}, "--threads"},
		{[]string{src, "-o", out, "--output-tensor-type", "Q3"}, "--output-tensor-type"},
		{[]string{src, "-o", out, "--imatrix", filepath.Join(t.TempDir(), "absent.gguf")}, "absent.gguf"},
		{[]string{src, "-o", out, "--arch", "llama"}, "--arch"},
	} {
		_, err := runQuantizeCmd(t, tc.args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d, err %v; want exit 2 mentioning %q", tc.args[1:], exitCode(err), err, tc.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed run left %s behind", out)
	}
}

func TestQuantizeDryRun(t *testing.T) {
	src := tinyHF(t)
	out := filepath.Join(t.TempDir(), "out.gguf")
	stdout, err := runQuantizeCmd(t, src, "-o", out, "--dry-run", "--tensor-type", `blk\.0\.ffn_up=q8_0`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"token_embd.weight", "Q8_0", "blk.1.attn_v.weight", "fallback from Q6_K: 64 columns",
		"--tensor-type", "preset Q4_K_M", "quant size", "required fallback quantization"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, stdout)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--dry-run wrote %s", out)
	}
	// Without -o it is fine too.
	if _, err := runQuantizeCmd(t, src, "--dry-run", "--bits", "8"); err != nil {
		t.Fatal(err)
	}
}

func TestQuantizeThreadsReportRequantize(t *testing.T) {
	src := tinyHF(t)
	dir := t.TempDir()
	one, many := filepath.Join(dir, "one.gguf"), filepath.Join(dir, "many.gguf")
	rep := filepath.Join(dir, "report.json")
	if _, err := runQuantizeCmd(t, src, "-o", one, "--type", "Q4_K_M", "--threads", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := runQuantizeCmd(t, src, "-o", many, "--type", "Q4_K_M", "--threads", "5", "--report", rep); err != nil {
		t.Fatal(err)
	}
	if fileSHA(t, one) != fileSHA(t, many) {
		t.Error("output differs between --threads 1 and --threads 5")
	}

	f, err := gguf.Open(many)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for key, want := range map[string]any{"general.file_type": uint32(quantize.FileQ4_K_M), "general.quantization_version": uint32(2),
		quantize.KeyVersion: version, quantize.KeyPreset: "Q4_K_M", quantize.KeySourceFormat: "safetensors"} {
		if v, ok := f.Lookup(key); !ok || v != want {
			t.Errorf("%s = %v, want %v", key, v, want)
		}
	}
	files, _ := f.Lookup(quantize.KeySourceFiles)
	sums, _ := f.Lookup(quantize.KeySourceSHA256)
	fl, _ := files.([]string)
	sl, _ := sums.([]string)
	if len(fl) == 0 || len(fl) != len(sl) || !strings.Contains(strings.Join(fl, " "), "model.safetensors") {
		t.Errorf("source files %v, sums %v", files, sums)
	}

	raw, err := os.ReadFile(rep)
	if err != nil {
		t.Fatal(err)
	}
	var r verify.QuantizeReport
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Tensors) != len(f.Tensors) || r.Preset != "Q4_K_M" || r.Bytes == 0 || r.BitsPerWeight <= 0 {
		t.Fatalf("report %+v", r)
	}
	var total int64
	for i, rt := range r.Tensors {
		ti := f.Tensors[i]
		total += rt.Bytes
		if rt.Name != ti.Name || rt.Type != ti.Type.String() || rt.Bytes != ti.Size {
			t.Errorf("report row %d %+v, file has %s %s %d", i, rt, ti.Name, ti.Type, ti.Size)
		}
		switch {
		case ti.Type == ir.F32:
			if rt.RMSE != 0 {
				t.Errorf("%s: F32 tensor has RMSE %g", rt.Name, rt.RMSE)
			}
		case !(rt.RMSE > 0 && rt.RMSE < 0.2*rt.SourceRMS && rt.MaxAbsError >= rt.RMSE):
			t.Errorf("%s (%s): RMSE %g, max %g against source RMS %g", rt.Name, rt.Type, rt.RMSE, rt.MaxAbsError, rt.SourceRMS)
		}
	}
	if total != r.Bytes {
		t.Errorf("report bytes %d, rows sum to %d", r.Bytes, total)
	}

	// The output is quantized: requantizing it is refused unless allowed.
	again := filepath.Join(dir, "again.gguf")
	_, err = runQuantizeCmd(t, many, "-o", again, "--type", "Q8_0")
	if exitCode(err) != 2 || !errors.Is(err, quantize.ErrRequantize) || !strings.Contains(err.Error(), "--allow-requantize") {
		t.Fatalf("requantize: exit %d, %v", exitCode(err), err)
	}
	if _, err := runQuantizeCmd(t, many, "-o", again, "--type", "Q8_0", "--allow-requantize", "--no-source-hash"); err != nil {
		t.Fatal(err)
	}
	// The source's own stamps are replaced, not carried over.
	g, err := gguf.Open(again)
	if err != nil {
		t.Fatal(err)
	}
	files, _ = g.Lookup(quantize.KeySourceFiles)
	opts, _ := g.Lookup(quantize.KeyOptions)
	_, hashed := g.Lookup(quantize.KeySourceSHA256)
	format, _ := g.Lookup(quantize.KeySourceFormat)
	g.Close()
	if fs, _ := files.([]string); len(fs) != 1 || fs[0] != "many.gguf" || hashed || format != "gguf" {
		t.Errorf("requantized file: source files %v, format %v, sha256 present %v", files, format, hashed)
	}
	if o, _ := opts.([]string); strings.Join(o, ",") != "allow-requantize" {
		t.Errorf("options %v", opts)
	}
	// Same file type, same types: nothing to requantize.
	q8 := filepath.Join(dir, "q8.gguf")
	if _, err := runQuantizeCmd(t, again, "-o", q8, "--type", "Q8_0"); err != nil {
		t.Fatalf("Q8_0 of a Q8_0 file: %v", err)
	}
	if _, err := runQuantizeCmd(t, q8, "-o", q8, "--type", "Q8_0"); exitCode(err) != 2 {
		t.Errorf("output = input: %v", err)
	}
}

// TestQuantizeFixtures runs the whole command on the fixture models and
// compares the files with llama-quantize's: tensors (types, bytes, order)
// and metadata (the f32 conversion's keys with general.file_type set to
// the preset, plus the imatrix keys).
func TestQuantizeFixtures(t *testing.T) {
	root := os.Getenv(llamaref.FixturesEnv)
	if root == "" {
		t.Skip(llamaref.FixturesEnv + " not set: the comparison needs llama.cpp's outputs from the shared fixtures")
	}
	for _, tc := range []struct {
		model, entry string
		args         []string
		imatrix      bool
	}{
		{"gemma1-tiny", "quantize.Q4_K_M", []string{"--bits", "4"}, false},
		{"gemma2-tiny", "quantize.Q8_0", []string{"--bits", "8"}, false},
		{"gemma3-tiny", "quantize.Q3_K_M", []string{"--type", "q3_k_m"}, false},
		{"gemma3-tiny", "quantize_pure_imatrix.IQ4_XS", []string{"--type", "IQ4_XS", "--pure"}, true},
	} {
		t.Run(tc.model+"/"+tc.entry, func(t *testing.T) {
			ref, err := llamaref.LoadFixture(tc.model)
			if err != nil {
				t.Fatal(err)
			}
			entry, err := ref.Entry(tc.entry)
			if err != nil {
				t.Fatal(err)
			}
			f32, err := ref.Entry("convert.f32")
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out.gguf")
			args := append([]string{filepath.Join(root, tc.model, "hf"), "-o", out}, tc.args...)
			imPath := filepath.Join(root, tc.model, "llamacpp", "imatrix.gguf")
			if tc.imatrix {
				args = append(args, "--imatrix", imPath)
			}
			if _, err := runQuantizeCmd(t, args...); err != nil {
				t.Fatal(err)
			}
			ft, _ := quantize.ParsePreset(strings.SplitN(tc.entry, ".", 2)[1])
			want := &llamaref.Entry{Name: tc.entry, Tensors: entry.Tensors}
			for _, kv := range f32.KV {
				if kv.Key == "general.file_type" {
					kv.Value = json.RawMessage(jsonNumber(uint32(ft)))
				}
				want.KV = append(want.KV, kv)
			}
			if tc.imatrix {
				im, err := gguf.ReadImatrix(imPath)
				if err != nil {
					t.Fatal(err)
				}
				str := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
				want.KV = append(want.KV,
					llamaref.KV{Key: quantize.KeyImatrixFile, Type: []string{"STRING"}, Value: str(imPath)},
					llamaref.KV{Key: quantize.KeyImatrixDataset, Type: []string{"STRING"}, Value: str(im.Datasets[0])},
					llamaref.KV{Key: quantize.KeyImatrixEntries, Type: []string{"UINT32"}, Value: json.RawMessage(jsonNumber(uint32(len(im.Entries))))},
					llamaref.KV{Key: quantize.KeyImatrixChunks, Type: []string{"UINT32"}, Value: json.RawMessage(jsonNumber(im.ChunkCount))})
			}
			ignore := append([]string{quantize.KeyVersion, quantize.KeyPreset, quantize.KeyOptions, quantize.KeySourceFormat, quantize.KeySourceFiles, quantize.KeySourceSHA256, quantize.KeyImatrixSHA256},
				llamaref.DefaultIgnoreKeys...)
			diffs, err := llamaref.Compare(out, want, llamaref.Options{IgnoreKeys: ignore})
			if err != nil {
				t.Fatal(err)
			}
			if len(diffs) > 0 {
				t.Errorf("%s differs from llama.cpp's %s:\n%s", out, tc.entry, llamaref.Report(diffs, 20))
			}
		})
	}
}

func jsonNumber(v uint32) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestQuantizeEveryPreset writes every preset once (the tiny model's
// 64-wide rows exercise the block-size fallbacks) and reads it back.
func TestQuantizeEveryPreset(t *testing.T) {
	src := tinyHF(t)
	dir := t.TempDir()
	for _, p := range quantize.PresetNames() {
		out := filepath.Join(dir, p+".gguf")
		if _, err := runQuantizeCmd(t, src, "-o", out, "--type", p); err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		ft, _ := quantize.ParsePreset(p)
		m, err := ir.Open(out, ir.OpenOptions{})
		if err != nil {
			t.Errorf("%s: reading back: %v", p, err)
			continue
		}
		if v, _ := m.Lookup("general.file_type"); v != uint32(ft) {
			t.Errorf("%s: general.file_type %v, want %d", p, v, ft)
		}
		m.Close()
	}
}

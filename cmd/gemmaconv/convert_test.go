package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/gemmaconv/gemmaconv/internal/llamaref"
	"github.com/gemmaconv/gemmaconv/ir"
)

// runCLI runs the root command with args and returns stdout and the error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func fixtures(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(llamaref.FixturesEnv)
	if dir == "" {
		t.Skip(llamaref.FixturesEnv + " not set: this test compares with llama.cpp's outputs in the shared fixtures")
	}
	return dir
}

// fixtureSources lists one fixture model in every format gemmaconv reads,
// with the flags each needs: the three must convert to the same bytes.
func fixtureSources(fx, model string) map[string][]string {
	d := filepath.Join(fx, model)
	side := []string{"--config", filepath.Join(d, "hf", "config.json"), "--tokenizer", filepath.Join(d, "hf", "tokenizer.model")}
	return map[string][]string{
		"hf":      {filepath.Join(d, "hf")},
		"pytorch": append([]string{filepath.Join(d, "gemma_pytorch.ckpt")}, side...),
		"flax":    append([]string{filepath.Join(d, "jax", "params.msgpack")}, side...),
	}
}

// TestConvertMatchesLlamaCpp is the spine's acceptance test: for every
// fixture model and output type, `gemmaconv convert` writes a GGUF whose
// metadata (types and values) and tensors (names, types, shapes, sha256 of
// the data) equal llama.cpp's convert_hf_to_gguf.py output, naming keys
// aside. The f32 conversion is also run from the PyTorch and Flax copies of
// each model, which must give the same file.
func TestConvertMatchesLlamaCpp(t *testing.T) {
	fx := fixtures(t)
	for _, model := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		ref, err := llamaref.LoadFixture(model)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{"f32", "f16", "bf16"} {
			entry, err := ref.Entry("convert." + typ)
			if err != nil {
				t.Fatal(err)
			}
			for format, src := range fixtureSources(fx, model) {
				if typ != "f32" && format != "hf" {
					continue
				}
				t.Run(model+"/"+typ+"/"+format, func(t *testing.T) {
					out := filepath.Join(t.TempDir(), "out.gguf")
					args := append([]string{"convert", "-q", "--outtype", typ, "-o", out}, src...)
					if _, err := runCLI(t, args...); err != nil {
						t.Fatalf("gemmaconv %v: %v", args, err)
					}
					diffs, err := llamaref.Compare(out, entry, llamaref.Options{})
					if err != nil {
						t.Fatal(err)
					}
					if len(diffs) > 0 {
						t.Errorf("%d differences from llama.cpp's %s:\n%s", len(diffs), entry.Name, llamaref.Report(diffs, 20))
					}
				})
			}
		}
	}
}

// TestConvertDefaultOutType checks that convert keeps the source's float
// type (bf16 for the fixtures) when --outtype is not given.
func TestConvertDefaultOutType(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.gguf")
	if _, err := runCLI(t, "convert", "-q", "../../goldens/gemma3-tiny/hf", "-o", out); err != nil {
		t.Fatal(err)
	}
	m, err := ir.Open(out, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Tensor("token_embd.weight").DType; got != ir.BF16 {
		t.Errorf("token_embd stored as %s, want BF16 like the source", got)
	}
	if got := m.Tensor("output_norm.weight").DType; got != ir.F32 {
		t.Errorf("output_norm stored as %s, want F32", got)
	}
	if m.Config.NormOffset != 0 {
		t.Errorf("GGUF model has norm offset %g, want 0", m.Config.NormOffset)
	}
}

func TestConvertBadInput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.gguf")
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"bad outtype", []string{"convert", "-q", "../../goldens/gemma3-tiny/hf", "-o", out, "--outtype", "q4"}, 2},
		{"no output", []string{"convert", "-q", "../../goldens/gemma3-tiny/hf"}, 2},
		{"bad arch", []string{"convert", "-q", "../../goldens/gemma3-tiny/hf", "-o", out, "--arch", "llama"}, 2},
		{"missing source", []string{"convert", "-q", filepath.Join(dir, "nope"), "-o", out}, 2},
		{"not a model", []string{"convert", "-q", "../../README.md", "-o", out}, 2},
	}
	for _, c := range cases {
		_, err := runCLI(t, c.args...)
		if err == nil {
			t.Errorf("%s: succeeded", c.name)
			continue
		}
		if got := exitCode(err); got != c.code && !(c.code == 2 && got == -1) {
			t.Errorf("%s: exit %d, want %d (%v)", c.name, got, c.code, err)
		}
		if _, statErr := os.Stat(out); statErr == nil {
			t.Errorf("%s: wrote %s despite failing", c.name, out)
		}
	}
}

func TestInspectJSON(t *testing.T) {
	stdout, err := runCLI(t, "inspect", "--json", "../../goldens/gemma3-tiny/hf")
	if err != nil {
		t.Fatal(err)
	}
	var s ir.Summary
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("inspect --json is not JSON: %v\n%s", err, stdout)
	}
	if s.Format != "safetensors" || s.Config.Family != ir.Gemma3 || len(s.Tensors) != 80 || s.Tokenizer == nil || s.Tokenizer.Size != 4096 {
		t.Errorf("unexpected summary: format %q family %q %d tensors tokenizer %+v", s.Format, s.Config.Family, len(s.Tensors), s.Tokenizer)
	}
	text, err := runCLI(t, "inspect", "../../goldens/gemma3-tiny/hf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"architecture: gemma3", "blk.5.attn_q_norm.weight", "sliding window 16 on 5 of 6 layers"} {
		if !bytes.Contains([]byte(text), []byte(want)) {
			t.Errorf("inspect output lacks %q", want)
		}
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/verify"
)

// verifyCLI runs the verification commands (and convert) under a root
// like main's, quiet, and returns stdout and the error main would see.
func verifyCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	g := &globalFlags{quiet: true}
	root := &cobra.Command{Use: "gemmaconv", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", true, "no progress output")
	root.AddCommand(newConvertCmd(g), newTokenizeCmd(g), newRunCmd(g), newPerplexityCmd(g), newGoldensCmd(g), newVerifyCmd(g))
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// cliStatus is the exit status main gives err.
func cliStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2
}

// fixtureDir returns the shared fixtures directory or skips the test.
func fixtureDir(t *testing.T, why string) string {
	t.Helper()
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		t.Skip("GEMMACONV_FIXTURES not set: " + why)
	}
	return dir
}

// TestVerifyCLI converts a fixture to BF16 GGUF and verifies it against
// the source, the gemma_pytorch goldens and a text (exit 0, report
// written); a GGUF whose norms hold 2+w exits 1 naming a norm tensor.
func TestVerifyCLI(t *testing.T) {
	fx := fixtureDir(t, "verification runs on the fixture models")
	hf := filepath.Join(fx, "gemma3-tiny", "hf")
	tmp := t.TempDir()
	art := filepath.Join(tmp, "bf16.gguf")
	if _, err := verifyCLI(t, "convert", hf, "--outtype", "bf16", "-o", art); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(tmp, "text.txt")
	corpus, err := os.ReadFile(filepath.Join(fx, "text", "brown-test.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(text, corpus[:20000], 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(tmp, "report.json")
	out, err := verifyCLI(t, "verify", art, "--source", hf, "--goldens", filepath.Join(fx, "gemma3-tiny", "goldens"),
		"--text", text, "--ctx", "64", "--chunks", "2", "--max-rel", "1e-5", "--max-abs", "1e-3", "--report", report)
	t.Logf("summary:\n%s", out)
	if err != nil {
		t.Fatalf("verify of a sound bf16 GGUF: %v", err)
	}
	if !strings.Contains(out, "PASS goldens") || !strings.Contains(out, "PASS kld") || !strings.HasSuffix(out, "PASS\n") {
		t.Errorf("summary lacks checks")
	}
	var rep verify.Report
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || rep.Weights == nil || rep.Goldens == nil || rep.KLD == nil || rep.KLD.Chunks != 2 || rep.Goldens.Tolerances.MaxRel != 1e-5 {
		t.Errorf("report: %s", b)
	}

	// Norms with the +1 applied twice.
	src, err := ir.Open(hf, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	once, err := ir.WithNormOffset(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	once.Config.NormOffset = 1
	twice, err := ir.WithNormOffset(once, 0)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := quantize.FloatPlan(twice, ir.BF16)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := quantize.Convert(twice, plan, quantize.ConvertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(tmp, "twice.gguf")
	if err := gguf.Write(bad, cm, gguf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err = verifyCLI(t, "verify", bad, "--source", hf, "--json")
	if cliStatus(err) != 1 || !strings.Contains(err.Error(), "weights blk.0.attn_norm.weight") {
		t.Fatalf("norms twice: status %d, error %v", cliStatus(err), err)
	}
	t.Logf("norms twice: %v", err)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if rep.Passed || rep.Failures[0].Subject != "blk.0.attn_norm.weight" {
		t.Errorf("--json report: passed %v, failures %v", rep.Passed, rep.Failures)
	}

	// Goldens alone: the source passes the exact tolerances.
	if _, err := verifyCLI(t, "verify", hf, "--goldens", filepath.Join(fx, "gemma3-tiny", "goldens"), "--max-rel", "1e-5", "--max-abs", "1e-3"); err != nil {
		t.Errorf("hf against goldens: %v", err)
	}
	// ... and a tolerance it cannot meet fails with status 1.
	if _, err := verifyCLI(t, "verify", hf, "--goldens", filepath.Join(fx, "gemma3-tiny", "goldens"), "--max-abs", "1e-9"); cliStatus(err) != 1 || !strings.Contains(err.Error(), "goldens prompt 0") {
		t.Errorf("impossible tolerance: status %d, %v", cliStatus(err), err)
	}
}

// TestVerifyUsage: usage and input errors exit with status 2.
func TestVerifyUsage(t *testing.T) {
	tmp := t.TempDir()
	for _, args := range [][]string{
		{"verify", filepath.Join(tmp, "x.gguf")},
		{"verify", filepath.Join(tmp, "x.gguf"), "--goldens", tmp, "--text", "t.txt"},
		{"verify", filepath.Join(tmp, "x.gguf"), "--source", filepath.Join(tmp, "y")},
		{"verify", filepath.Join(tmp, "x.gguf"), "--goldens", filepath.Join(tmp, "nothing")},
		{"verify"},
	} {
		_, err := verifyCLI(t, args...)
		if cliStatus(err) != 2 {
			t.Errorf("%v: status %d (%v), want 2", args[1:], cliStatus(err), err)
		}
	}
}

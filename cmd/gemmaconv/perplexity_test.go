package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPerplexityCLI measures perplexity on a slice of the test corpus
// (--json), then KL divergence of the f32 GGUF against the checkpoint,
// which must be exactly zero.
func TestPerplexityCLI(t *testing.T) {
	fx := fixtureDir(t, "perplexity runs on the fixture models and corpus")
	tmp := t.TempDir()
	corpus, err := os.ReadFile(filepath.Join(fx, "text", "brown-test.txt"))
	if err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(tmp, "text.txt")
	if err := os.WriteFile(text, corpus[:20000], 0o644); err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(fx, "gemma1-tiny", "hf")
	out, err := verifyCLI(t, "perplexity", hf, "--text", text, "--ctx", "128", "--chunks", "3", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		PPL             float64 `json:"ppl"`
		Chunks          int     `json:"chunks"`
		Scored          int     `json:"scored_tokens"`
		TokensPerSecond float64 `json:"tokens_per_second"`
		KLD             *struct {
			KLDMean float64 `json:"kld_mean"`
			SameTop float64 `json:"same_top"`
			BasePPL float64 `json:"base_ppl"`
		} `json:"kld"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("gemma1-tiny: ppl %.4f over %d chunks (%d scored), %.0f tokens/s", r.PPL, r.Chunks, r.Scored, r.TokensPerSecond)
	if r.Chunks != 3 || r.Scored != 3*63 || !(r.PPL > 1 && r.PPL < 4096) || r.KLD != nil {
		t.Errorf("report %s", out)
	}
	gg := filepath.Join(tmp, "f32.gguf")
	if _, err := verifyCLI(t, "convert", hf, "--outtype", "f32", "-o", gg); err != nil {
		t.Fatal(err)
	}
	ppl := r.PPL
	out, err = verifyCLI(t, "perplexity", gg, "--text", text, "--ctx", "128", "--chunks", "3", "--kl-base", hf, "--json")
	if err != nil {
		t.Fatal(err)
	}
	r.KLD = nil
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.KLD == nil || r.KLD.KLDMean != 0 || r.KLD.SameTop != 1 || math.Abs(r.PPL-ppl) > 1e-9*ppl || r.KLD.BasePPL != r.PPL {
		t.Errorf("f32 GGUF against its checkpoint: %s", out)
	}
	out, err = verifyCLI(t, "perplexity", gg, "--text", text, "--ctx", "128", "--chunks", "1", "--kl-base", hf)
	if err != nil || !strings.Contains(out, "Mean    KLD     :   0.000000") || !strings.Contains(out, "tokens/s") {
		t.Errorf("human output (%v):\n%s", err, out)
	}
	// Usage and input errors.
	for _, args := range [][]string{
		{"perplexity", hf},
		{"perplexity", hf, "--text", filepath.Join(tmp, "missing.txt")},
		{"perplexity", hf, "--text", text, "--ctx", "100000"},
	} {
		if _, err := verifyCLI(t, args...); cliStatus(err) != 2 {
			t.Errorf("%v: status %d (%v), want 2", args[1:], cliStatus(err), err)
		}
	}
}

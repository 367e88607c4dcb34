package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/runtime"
)

// TestGoldensMake makes goldens for the fixture prompts from the Hugging
// Face checkpoint, checks their ids against gemma_pytorch's and verifies
// an f32 GGUF against them with the exact tolerances.
func TestGoldensMake(t *testing.T) {
	fx := fixtureDir(t, "goldens are made from the fixture models")
	ref, err := runtime.ReadGoldens(filepath.Join(fx, "gemma1-tiny", "goldens"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	var lines []string
	for _, p := range ref.Prompts {
		lines = append(lines, p.Text)
	}
	prompts := filepath.Join(tmp, "prompts.txt")
	if err := os.WriteFile(prompts, []byte(strings.Join(lines, "\r\n")+"\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(fx, "gemma1-tiny", "hf")
	out := filepath.Join(tmp, "goldens")
	if _, err := verifyCLI(t, "goldens", "make", hf, "--prompts", prompts, "-o", out); err != nil {
		t.Fatal(err)
	}
	g, err := runtime.ReadGoldens(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Prompts) != len(ref.Prompts) || g.Vocab != ref.Vocab || g.Model != "hf" {
		t.Fatalf("made %d prompts of vocabulary %d for %q", len(g.Prompts), g.Vocab, g.Model)
	}
	for i, p := range g.Prompts {
		if p.Text != ref.Prompts[i].Text || !equalInt32(p.TokenIDs, ref.Prompts[i].TokenIDs) {
			t.Errorf("prompt %d: %q %v, gemma_pytorch %q %v", i, p.Text, p.TokenIDs, ref.Prompts[i].Text, ref.Prompts[i].TokenIDs)
		}
	}
	gg := filepath.Join(tmp, "f32.gguf")
	if _, err := verifyCLI(t, "convert", hf, "--outtype", "f32", "-o", gg); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyCLI(t, "verify", gg, "--goldens", out, "--max-rel", "1e-5", "--max-abs", "1e-3"); err != nil {
		t.Errorf("f32 GGUF against goldens made from hf: %v", err)
	}
	empty := filepath.Join(tmp, "empty.txt")
	if err := os.WriteFile(empty, []byte("\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyCLI(t, "goldens", "make", hf, "--prompts", empty, "-o", out); cliStatus(err) != 2 {
		t.Errorf("no prompts: status %d (%v)", cliStatus(err), err)
	}
	if _, err := verifyCLI(t, "goldens", "make", hf, "-o", out); cliStatus(err) != 2 {
		t.Errorf("no --prompts: status %d (%v)", cliStatus(err), err)
	}
}

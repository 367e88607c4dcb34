package main

import (
	"path/filepath"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/tokenizer"
	"github.com/gemmaconv/gemmaconv/verify"
)

// TestRunCLI generates from a fixture model and compares the printed text
// with the decoded greedy continuation.
func TestRunCLI(t *testing.T) {
	fx := fixtureDir(t, "generation runs on the fixture models")
	hf := filepath.Join(fx, "gemma3-tiny", "hf")
	const prompt = "The jury said"
	out, err := verifyCLI(t, "run", hf, "--prompt", prompt, "-n", "8")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ir.Open(hf, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	md, err := runtime.Load(m, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := tokenizer.New(m.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := runtime.Generate(md, verify.PromptIDs(enc, prompt), 8, []int32{m.Tokenizer.EOS, m.Tokenizer.EOT}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := enc.Decode(gen) + "\n"; out != want || len(gen) == 0 {
		t.Errorf("run printed %q, want %q (%v)", out, want, gen)
	}
	t.Logf("%q → %q", prompt, out)
	if _, err := verifyCLI(t, "run", hf); cliStatus(err) != 2 {
		t.Errorf("no --prompt: status %d (%v)", cliStatus(err), err)
	}
}

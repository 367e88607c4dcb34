package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGoldensRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	g := &Goldens{Model: "m", Reference: "test", Vocab: 3, Prompts: []GoldenPrompt{
		{Text: "a", TokenIDs: []int32{2, 5}, Argmax: []int32{1, 0}, Logits: []float32{1, 2, 3, 4, 5, 6}},
		{Text: "b", TokenIDs: []int32{2}, Logits: []float32{-1, 0.5, 7}},
	}, Perplexity: &GoldenPerplexity{Ctx: 128, Chunks: 2, ScoredTokens: 126, NLLMean: 1.5, PPL: 4.48}}
	if err := WriteGoldens(dir, g); err != nil {
		t.Fatal(err)
	}
	r, err := ReadGoldens(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Vocab != 3 || len(r.Prompts) != 2 || sameBits(r.Prompts[0].Logits, g.Prompts[0].Logits) >= 0 ||
		sameBits(r.Prompts[1].Logits, g.Prompts[1].Logits) >= 0 || r.Perplexity.PPL != 4.48 || r.LogitsFile != DefaultLogitsFile {
		t.Errorf("round trip: %+v", r)
	}
	// A logits file of the wrong size is rejected with its name.
	if err := os.WriteFile(filepath.Join(dir, DefaultLogitsFile), make([]byte, 20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadGoldens(dir); err == nil || !strings.Contains(err.Error(), DefaultLogitsFile) {
		t.Errorf("bad logits size: %v", err)
	}
	g.LogitsFile = "../x"
	if err := WriteGoldens(dir, g); err == nil {
		t.Error("logits file outside the directory accepted")
	}
	g.LogitsFile = ""
	g.Prompts[1].Logits = g.Prompts[1].Logits[:2]
	if err := WriteGoldens(dir, g); err == nil {
		t.Error("short logits accepted")
	}
}

// FuzzReadGoldens feeds arbitrary goldens.json and logits files to
// ReadGoldens: it must return an error or a consistent result, never panic.
func FuzzReadGoldens(f *testing.F) {
	f.Add([]byte(`{"logits_file":"logits.f32","prompts":[{"text":"x","token_ids":[2,3]}]}`), make([]byte, 16))
	f.Add([]byte(`{"prompts":[{"token_ids":[2],"argmax":[1,2]}]}`), make([]byte, 4))
	f.Add([]byte(`{"logits_file":"../../etc/passwd","prompts":[]}`), []byte{})
	f.Add([]byte(`{"prompts":[{"token_ids":[]}]}`), make([]byte, 3))
	f.Add([]byte(`not json`), []byte{1})
	f.Fuzz(func(t *testing.T, js, logits []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, GoldensFile), js, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, DefaultLogitsFile), logits, 0o644); err != nil {
			t.Fatal(err)
		}
		g, err := ReadGoldens(dir)
		if err != nil {
			return
		}
		for _, p := range g.Prompts {
			if len(p.Logits) != len(p.TokenIDs)*g.Vocab {
				t.Fatalf("prompt with %d tokens has %d logits (vocab %d)", len(p.TokenIDs), len(p.Logits), g.Vocab)
			}
		}
	})
}

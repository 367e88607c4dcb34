package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenizeJSON tokenizes fixture cases through the tokenizer.model and
// a model directory and compares with SentencePiece's ids and pieces.
func TestTokenizeJSON(t *testing.T) {
	fx := fixtureDir(t, "the tokenizer and SentencePiece's tokenizations live in the shared fixtures")
	raw, err := os.ReadFile(filepath.Join(fx, "text", "tokenization.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases struct {
		Cases []struct {
			Text   string   `json:"text"`
			IDs    []int32  `json:"ids"`
			Pieces []string `json:"pieces"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	srcs := []string{filepath.Join(fx, "tokenizer", "tokenizer.model"), filepath.Join(fx, "gemma1-tiny", "hf")}
	for i, c := range cases.Cases {
		if i%10 != 1 { // a spread of cases keeps the test fast
			continue
		}
		for _, src := range srcs {
			out, err := verifyCLI(t, "tokenize", src, "--text", c.Text, "--json")
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			var got struct {
				IDs    []int32  `json:"ids"`
				Pieces []string `json:"pieces"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("case %d: %v: %s", i, err, out)
			}
			if !equalInt32(got.IDs, c.IDs) {
				t.Errorf("case %d %q via %s: ids %v, SentencePiece %v", i, c.Text, filepath.Base(src), got.IDs, c.IDs)
			}
			if len(got.Pieces) != len(got.IDs) {
				t.Errorf("case %d: %d pieces for %d ids", i, len(got.Pieces), len(got.IDs))
			}
		}
	}
	out, err := verifyCLI(t, "tokenize", srcs[0], "--text", "The jury said", "--bos")
	if err != nil {
		t.Fatal(err)
	}
	// The first golden prompt's ids are 2 336 499 1158 554.
	if !strings.HasPrefix(out, "5 tokens\n       2  \"<bos>\"\n     336  ") {
		t.Errorf("human output:\n%s", out)
	}
	out, err = verifyCLI(t, "tokenize", srcs[0], "--text", "", "--json")
	if err != nil || strings.TrimSpace(out) != `{"ids":[],"pieces":[]}` {
		t.Errorf("empty text: %v %s", err, out)
	}
}

func equalInt32(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTokenizeUsage: a missing --text, an unreadable source and a file
// that is neither a model nor a tokenizer exit with status 2.
func TestTokenizeUsage(t *testing.T) {
	tmp := t.TempDir()
	junk := filepath.Join(tmp, "junk.bin")
	if err := os.WriteFile(junk, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"tokenize", junk},
		{"tokenize", filepath.Join(tmp, "missing.model"), "--text", "x"},
		{"tokenize", junk, "--text", "x"},
	} {
		_, err := verifyCLI(t, args...)
		if cliStatus(err) != 2 {
			t.Errorf("%v: status %d (%v), want 2", args[1:], cliStatus(err), err)
		}
	}
}

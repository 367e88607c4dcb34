package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// pplJSON runs `gemmaconv perplexity --json` the way llama-perplexity was
// run for the fixtures (ctx 128, 200 chunks of brown-test) and returns ppl.
func pplJSON(t *testing.T, fx, model string) float64 {
	t.Helper()
	out, err := runCLI(t, "perplexity", "-q", "--json", "--ctx", "128", "--chunks", "200",
		"--text", filepath.Join(fx, "text", "brown-test.txt"), model)
	if err != nil {
		t.Fatalf("perplexity %s: %v", model, err)
	}
	var r struct {
		PPL             float64 `json:"ppl"`
		Scored          int     `json:"scored_tokens"`
		TokensPerSecond float64 `json:"tokens_per_second"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("perplexity --json output is not JSON: %v\n%s", err, out)
	}
	if r.Scored != 12600 {
		t.Errorf("scored %d tokens, llama.cpp's method scores 12600 here", r.Scored)
	}
	t.Logf("%s: ppl %.8g (%.0f tokens/s)", filepath.Base(model), r.PPL, r.TokensPerSecond)
	return r.PPL
}

type fixtureFigures struct {
	Perplexity map[string]struct {
		PPL float64 `json:"ppl"`
	} `json:"perplexity"`
}

type goldenFigures struct {
	Perplexity struct {
		PPL float64 `json:"ppl"`
	} `json:"perplexity"`
	Dequantized struct {
		Types map[string]struct {
			PPL float64 `json:"ppl"`
		} `json:"types"`
	} `json:"perplexity_dequantized"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func relDiff(a, b float64) float64 { return math.Abs(a-b) / math.Abs(b) }

// TestPerplexityOfOurFiles is the end-to-end numbers check: perplexity of
// the files gemmaconv writes, computed by gemmaconv, against gemma_pytorch
// (float32 on the same weights: within 1e-5 relative) and llama-perplexity
// (which computes with an f16 KV cache and quantized activations: within
// 0.1% for f32, 0.5% for quantized files).
func TestPerplexityOfOurFiles(t *testing.T) {
	fx := fixtures(t)
	if testing.Short() {
		t.Skip("-short: whole-corpus perplexity of 13 files takes minutes")
	}
	for _, model := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		var lf fixtureFigures
		var gf goldenFigures
		readJSON(t, filepath.Join(fx, model, "llamacpp.json"), &lf)
		readJSON(t, filepath.Join(fx, model, "goldens", "goldens.json"), &gf)
		src := filepath.Join(fx, model, "hf")
		t.Run(model+"/f32", func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "f32.gguf")
			if _, err := runCLI(t, "convert", "-q", "--outtype", "f32", src, "-o", out); err != nil {
				t.Fatal(err)
			}
			got := pplJSON(t, fx, out)
			if d := relDiff(got, gf.Perplexity.PPL); d > 1e-5 {
				t.Errorf("ppl %.8g vs gemma_pytorch %.8g: %.2g relative (limit 1e-5)", got, gf.Perplexity.PPL, d)
			}
			if want := lf.Perplexity["convert-f32"].PPL; relDiff(got, want) > 1e-3 {
				t.Errorf("ppl %.8g vs llama-perplexity %.8g: %.2g relative (limit 0.1%%)", got, want, relDiff(got, want))
			}
		})
		if len(gf.Dequantized.Types) == 0 {
			continue
		}
		for _, preset := range []string{"Q8_0", "Q4_0", "Q4_K_M", "Q6_K", "IQ4_XS"} {
			t.Run(model+"/"+preset, func(t *testing.T) {
				want, ok := gf.Dequantized.Types[preset]
				if !ok {
					t.Fatalf("goldens.json has no perplexity_dequantized for %s", preset)
				}
				out := filepath.Join(t.TempDir(), preset+".gguf")
				if _, err := runQuantizeCmd(t, src, "-o", out, "--type", preset, "--no-source-hash"); err != nil {
					t.Fatal(err)
				}
				got := pplJSON(t, fx, out)
				if d := relDiff(got, want.PPL); d > 1e-5 {
					t.Errorf("ppl %.8g vs gemma_pytorch on the dequantized weights %.8g: %.2g relative (limit 1e-5)", got, want.PPL, d)
				}
				lc := lf.Perplexity["q-"+preset].PPL
				if d := relDiff(got, lc); d > 5e-3 {
					t.Errorf("ppl %.8g vs llama-perplexity %.8g: %.2g relative (limit 0.5%%)", got, lc, d)
				}
			})
		}
	}
}

package runtime

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// corpusTokens tokenizes brown-test.txt with the model's tokenizer, BOS
// first, as llama-perplexity does.
func corpusTokens(t testing.TB, dir string, m *Model, tk *tokenizer.Encoder) []int32 {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]int32{m.DefaultPerplexityOptions().BOS}, tk.Encode(string(text))...)
}

// TestGoldenPerplexity compares the whole-corpus perplexity (ctx 128, 200
// chunks) with gemma_pytorch's.
func TestGoldenPerplexity(t *testing.T) {
	dir := fixtures(t, "the corpus and gemma_pytorch perplexities live in the shared fixtures")
	if testing.Short() {
		t.Skip("-short: whole-corpus perplexity takes a while")
	}
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			im := openFixture(t, dir, name)
			g, err := ReadGoldens(filepath.Join(dir, name, "goldens"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := Load(im, Options{})
			if err != nil {
				t.Fatal(err)
			}
			tk, err := tokenizer.New(im.Tokenizer)
			if err != nil {
				t.Fatal(err)
			}
			opts := m.DefaultPerplexityOptions()
			if opts.BOS < 0 {
				t.Fatal("model has no BOS token")
			}
			toks := corpusTokens(t, dir, m, tk)
			start := time.Now()
			r, err := Perplexity(m, toks, g.Perplexity.Ctx, g.Perplexity.Chunks, opts)
			if err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			rel := math.Abs(r.PPL-g.Perplexity.PPL) / g.Perplexity.PPL
			t.Logf("%d tokens; ppl %.10g ± %.4g (gemma_pytorch %.10g), rel diff %.3g; nll %.10g; %d scored in %d chunks; %.1f s (%.0f tokens/s)",
				len(toks), r.PPL, r.PPLError, g.Perplexity.PPL, rel, r.NLLMean, r.Count, r.Chunks, el.Seconds(), float64(r.Chunks*(r.Ctx-1))/el.Seconds())
			if r.Count != g.Perplexity.ScoredTokens {
				t.Errorf("scored %d tokens, gemma_pytorch %d", r.Count, g.Perplexity.ScoredTokens)
			}
			if rel > 1e-5 {
				t.Errorf("perplexity %.10g differs from gemma_pytorch's %.10g by %.3g relative (limit 1e-5)", r.PPL, g.Perplexity.PPL, rel)
			}
		})
	}
}

// TestQuantizedPerplexity quantizes a fixture with the per-tensor types of
// llama.cpp's own quantized file (llamacpp.json) and compares the
// perplexity with gemma_pytorch's on those weights dequantized
// (perplexity_dequantized): the runtime is exact on quantized models too.
// Two presets run by default; GEMMACONV_RUNTIME_ALL=1 runs all of them.
func TestQuantizedPerplexity(t *testing.T) {
	dir := fixtures(t, "llama.cpp's tensor types and gemma_pytorch's perplexities live in the shared fixtures")
	if testing.Short() {
		t.Skip("-short: whole-corpus perplexity takes a while")
	}
	cases := []struct{ model, preset string }{{"gemma1-tiny", "Q8_0"}, {"gemma3-tiny", "Q4_K_M"}}
	if os.Getenv("GEMMACONV_RUNTIME_ALL") != "" {
		cases = nil
		for _, m := range []string{"gemma1-tiny", "gemma3-tiny"} {
			for _, p := range []string{"Q8_0", "Q4_0", "Q4_K_M", "Q6_K", "IQ4_XS"} {
				cases = append(cases, struct{ model, preset string }{m, p})
			}
		}
	}
	for _, c := range cases {
		t.Run(c.model+"/"+c.preset, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, c.model, "llamacpp.json"))
			if err != nil {
				t.Fatal(err)
			}
			var lj struct {
				Quantize map[string][]struct{ Name, Type string } `json:"quantize"`
			}
			if err := json.Unmarshal(raw, &lj); err != nil {
				t.Fatal(err)
			}
			g, err := ReadGoldens(filepath.Join(dir, c.model, "goldens"))
			if err != nil {
				t.Fatal(err)
			}
			var pd struct {
				Types map[string]struct {
					PPL float64 `json:"ppl"`
				} `json:"types"`
			}
			if err := json.Unmarshal(g.PerplexityDequantized, &pd); err != nil {
				t.Fatal(err)
			}
			want, ok := pd.Types[c.preset]
			if !ok || len(lj.Quantize[c.preset]) == 0 {
				t.Fatalf("no %s figures in the fixtures", c.preset)
			}
			types := map[string]ir.DType{}
			for _, tn := range lj.Quantize[c.preset] {
				typ, err := ir.ParseDType(tn.Type)
				if err != nil {
					t.Fatal(err)
				}
				types[tn.Name] = typ
			}
			im := openFixture(t, dir, c.model)
			gm, err := ir.WithNormOffset(im, 0) // GGUF's norm convention, as in llama.cpp's file
			if err != nil {
				t.Fatal(err)
			}
			qm, err := quantize.Convert(gm, types, quantize.ConvertOptions{})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			m, err := Load(qm, Options{}) // CacheAuto: quantizes and dequantizes once here
			if err != nil {
				t.Fatal(err)
			}
			loaded := time.Since(start)
			tk, err := tokenizer.New(im.Tokenizer)
			if err != nil {
				t.Fatal(err)
			}
			toks := corpusTokens(t, dir, m, tk)
			r, err := Perplexity(m, toks, g.Perplexity.Ctx, g.Perplexity.Chunks, m.DefaultPerplexityOptions())
			if err != nil {
				t.Fatal(err)
			}
			rel := math.Abs(r.PPL-want.PPL) / want.PPL
			t.Logf("%s %s: ppl %.10g, gemma_pytorch on the dequantized weights %.10g, rel diff %.3g (quantize+load %.1f s, total %.1f s)",
				c.model, c.preset, r.PPL, want.PPL, rel, loaded.Seconds(), time.Since(start).Seconds())
			if rel > 1e-5 {
				t.Errorf("perplexity %.10g differs from %.10g by %.3g relative (limit 1e-5)", r.PPL, want.PPL, rel)
			}
		})
	}
}

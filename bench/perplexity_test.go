package bench

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkPerplexityFixtures runs `gemmaconv perplexity` on each shared
// fixture model (ctx 128, 200 chunks of brown-test, llama-perplexity's
// setting) and reports tokens/s as the command measures it. It needs
// GEMMACONV_FIXTURES.
func BenchmarkPerplexityFixtures(b *testing.B) {
	fx := os.Getenv("GEMMACONV_FIXTURES")
	if fx == "" {
		b.Skip("GEMMACONV_FIXTURES not set: the fixture models live in the shared fixtures")
	}
	bin := buildBinary(b, b.TempDir())
	for _, model := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		b.Run(model, func(b *testing.B) {
			var tps, ppl float64
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(bin, "perplexity", "-q", "--json", "--ctx", "128", "--chunks", "200",
					"--text", filepath.Join(fx, "text", "brown-test.txt"), filepath.Join(fx, model, "hf"))
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					b.Fatalf("gemmaconv perplexity: %v", err)
				}
				var r struct {
					PPL             float64 `json:"ppl"`
					TokensPerSecond float64 `json:"tokens_per_second"`
				}
				if err := json.Unmarshal(out, &r); err != nil {
					b.Fatal(err)
				}
				tps, ppl = r.TokensPerSecond, r.PPL
			}
			b.ReportMetric(tps, "tokens/s")
			b.ReportMetric(ppl, "ppl")
		})
	}
}

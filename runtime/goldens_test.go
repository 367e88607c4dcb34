package runtime

import (
	"os"
	"path/filepath"
	"testing"

	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

// fixtures returns the shared fixtures directory or skips the test.
func fixtures(t testing.TB, why string) string {
	t.Helper()
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		t.Skip("GEMMACONV_FIXTURES not set: " + why)
	}
	return dir
}

var fixtureModels = []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"}

func openFixture(t testing.TB, dir, name string) *ir.Model {
	t.Helper()
	m, err := ir.Open(filepath.Join(dir, name, "hf"), ir.OpenOptions{})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestGoldenLogits runs the goldens' prompts and compares every position's
// logits with gemma_pytorch's float32 outputs, for the Hugging Face files
// streamed and cached, and for the same weights with GGUF's norm
// convention (norms holding 1+w).
func TestGoldenLogits(t *testing.T) {
	dir := fixtures(t, "the gemma_pytorch golden logits live in the shared fixtures")
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			im := openFixture(t, dir, name)
			g, err := ReadGoldens(filepath.Join(dir, name, "goldens"))
			if err != nil {
				t.Fatal(err)
			}
			gg, err := ir.WithNormOffset(im, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range []struct {
				what string
				m    *ir.Model
				o    Options
			}{{"hf streamed", im, Options{Cache: CacheNone}}, {"hf cached", im, Options{Cache: CacheAll}}, {"norms 1+w", gg, Options{Workers: 1}}} {
				m, err := Load(v.m, v.o)
				if err != nil {
					t.Fatal(err)
				}
				diffs, err := CompareGoldens(m, g)
				if err != nil {
					t.Fatal(err)
				}
				for i, d := range diffs {
					t.Logf("%s: prompt %d (%d tokens): rel err %.3g, max |Δ| %.3g, argmax agreement %.3f", v.what, i, d.Tokens, d.RelErr, d.MaxAbs, d.ArgmaxAgree)
					if d.RelErr > 1e-5 || d.MaxAbs > 1e-3 {
						t.Errorf("%s: prompt %d: rel err %.3g (limit 1e-5), max |Δ| %.3g (limit 1e-3)", v.what, i, d.RelErr, d.MaxAbs)
					}
					if d.ArgmaxAgree != 1 {
						t.Errorf("%s: prompt %d: argmax agrees at %.3f of positions", v.what, i, d.ArgmaxAgree)
					}
				}
			}
		})
	}
}

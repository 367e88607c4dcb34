package verify

import (
	"os"
	"path/filepath"
	"testing"

	_ "github.com/gemmaconv/gemmaconv/formats/gguf"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/runtime"
)

func TestCalib(t *testing.T) {
	dir := os.Getenv("GEMMACONV_FIXTURES")
	text, _ := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
	for _, name := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		src, err := ir.Open(filepath.Join(dir, name, "hf"), ir.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		g, _ := runtime.ReadGoldens(filepath.Join(dir, name, "goldens"))
		for _, ft := range []string{"Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_XS", "MXFP4", "Q3_K_M", "Q2_K", "TQ2_0", "TQ1_0"} {
			f, err := quantize.ParseFileType(ft)
			if err != nil {
				t.Fatal(err)
			}
			gm, _ := ir.WithNormOffset(src, 0)
			plan, _, err := quantize.Plan(gm, quantize.PlanOptions{FileType: f, Pure: true})
			if err != nil {
				t.Fatal(err)
			}
			cm, err := quantize.Convert(gm, plan, quantize.ConvertOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Run(cm, src, Options{Goldens: g, Text: string(text), Ctx: 128, Chunks: 20, Tolerances: Tolerances{}})
			if err != nil {
				t.Fatal(err)
			}
			minCos, maxRel := map[string]float64{}, map[string]float64{}
			for _, tr := range rep.Weights.Tensors {
				if tr.Rule != "floor" {
					continue
				}
				if v, ok := minCos[tr.Type]; !ok || float64(tr.Cosine) < v {
					minCos[tr.Type] = float64(tr.Cosine)
				}
				if float64(tr.RelRMSE) > maxRel[tr.Type] {
					maxRel[tr.Type] = float64(tr.RelRMSE)
				}
			}
			t.Logf("%s %s: cos %v rel %v | goldens rel %.3g abs %.3g top1 %.3f kld %.3g | text kld %.4g sametop %.4f pplratio %.4f | fails %d",
				name, ft, minCos, maxRel, float64(rep.Goldens.MaxRel), float64(rep.Goldens.MaxAbs), float64(rep.Goldens.MinTop1), float64(rep.Goldens.MaxKLD),
				float64(rep.KLD.KLDMean), float64(rep.KLD.SameTop), float64(rep.KLD.PPLRatio), len(rep.Failures))
			for _, f := range rep.Failures {
				t.Log("   ", f)
			}
		}
		src.Close()
	}
}

package verify

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

var fixtureModels = []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"}

// fixtures returns the shared fixtures directory or skips the test.
func fixtures(t testing.TB, why string) string {
	t.Helper()
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		t.Skip("GEMMACONV_FIXTURES not set: " + why)
	}
	return dir
}

func openModel(t testing.TB, path string) *ir.Model {
	t.Helper()
	m, err := ir.Open(path, ir.OpenOptions{})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// writeGGUF writes src as convert does (norms to 1+w, FloatPlan or a
// quantization plan, general.file_type) to dir/name and returns the path.
// edit, when set, may replace tensors of the converted model before it is
// written.
func writeGGUF(t testing.TB, src *ir.Model, typ ir.DType, quant quantize.FileType, path string, edit func(m *ir.Model)) string {
	t.Helper()
	gm, err := ir.WithNormOffset(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var plan map[string]ir.DType
	if typ.IsFloat() {
		if plan, err = quantize.FloatPlan(gm, typ); err != nil {
			t.Fatal(err)
		}
	} else if plan, _, err = quantize.Plan(gm, quantize.PlanOptions{FileType: quant}); err != nil {
		t.Fatal(err)
	}
	cm, err := quantize.Convert(gm, plan, quantize.ConvertOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if typ.IsFloat() {
		cm.SetExtra("general.file_type", uint32(quantize.FloatFileType(typ)))
	} else {
		cm.SetExtra("general.file_type", uint32(quant))
	}
	if edit != nil {
		edit(cm)
	}
	if err := gguf.Write(path, cm, gguf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// editBytes rewrites bytes of a tensor source as they are read: fn gets
// the absolute offset of p[0].
type editBytes struct {
	src io.ReaderAt
	fn  func(p []byte, off int64)
}

func (e editBytes) ReadAt(p []byte, off int64) (int, error) {
	n, err := e.src.ReadAt(p, off)
	e.fn(p[:n], off)
	return n, err
}

// replaceTensor swaps in a copy of the named tensor whose bytes pass
// through fn.
func replaceTensor(t testing.TB, m *ir.Model, name string, fn func(p []byte, off int64)) {
	t.Helper()
	for i, x := range m.Tensors {
		if x.Name == name {
			c := *x
			c.Source = editBytes{x.Source, fn}
			m.Tensors[i] = &c
			return
		}
	}
	t.Fatalf("no tensor %s", name)
}

func readGoldens(t testing.TB, dir, name string) *runtime.Goldens {
	t.Helper()
	g, err := runtime.ReadGoldens(filepath.Join(dir, name, "goldens"))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// exact are the acceptance tolerances of exact float conversions.
var exact = Tolerances{MaxRel: 1e-5, MaxAbs: 1e-3, MinTop1: 1, MaxKLD: 1e-6}

// TestFloatGGUFs converts each fixture to f32 and bf16 GGUF as convert
// does and verifies the files against the Hugging Face source and the
// gemma_pytorch goldens with the exact-float tolerances; the source
// itself must match the goldens too.
func TestFloatGGUFs(t *testing.T) {
	dir := fixtures(t, "the fixture models and gemma_pytorch goldens live in the shared fixtures")
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			src := openModel(t, filepath.Join(dir, name, "hf"))
			g := readGoldens(t, dir, name)
			rep, err := Run(src, nil, Options{Goldens: g, Tolerances: exact})
			if err != nil {
				t.Fatal(err)
			}
			logGoldens(t, "hf", rep)
			if !rep.Passed {
				t.Errorf("hf source against goldens: %v", rep.Failures)
			}
			for _, typ := range []ir.DType{ir.F32, ir.BF16} {
				path := writeGGUF(t, src, typ, 0, filepath.Join(t.TempDir(), name+".gguf"), nil)
				art := openModel(t, path)
				rep, err := Run(art, src, Options{Goldens: g, Tolerances: exact})
				if err != nil {
					t.Fatal(err)
				}
				logGoldens(t, typ.String()+" gguf", rep)
				t.Logf("%s gguf weights: worst cosine %.9f, worst rounding ratio %.3g (%s); tokenizer notes %v",
					typ, float64(rep.Weights.WorstCosine), float64(rep.Weights.WorstBoundRatio), rep.Weights.WorstBoundTensor, rep.Tokenizer.Notes)
				if !rep.Passed {
					var b strings.Builder
					rep.WriteSummary(&b)
					t.Errorf("%s GGUF fails verification:\n%s", typ, b.String())
				}
				if rep.Weights.Compared != len(src.Tensors) {
					t.Errorf("compared %d tensors, the source has %d", rep.Weights.Compared, len(src.Tensors))
				}
			}
		})
	}
}

func logGoldens(t *testing.T, what string, rep *Report) {
	t.Helper()
	for _, p := range rep.Goldens.Prompts {
		t.Logf("%s prompt %d (%d tokens): rel %.3g, max |Δ| %.3g, top-1 %.3f, KLD mean %.3g",
			what, p.Index, p.Tokens, float64(p.Rel), float64(p.MaxAbs), float64(p.Top1), float64(p.KLDMean))
		if p.Rel > 1e-5 || p.MaxAbs > 1e-3 {
			t.Errorf("%s prompt %d: rel %.3g (limit 1e-5), max |Δ| %.3g (limit 1e-3)", what, p.Index, float64(p.Rel), float64(p.MaxAbs))
		}
	}
}

// TestKLDFloatGGUFs measures the bf16 GGUF against the f32 GGUF of the
// same model on a few chunks of the test corpus.
func TestKLDFloatGGUFs(t *testing.T) {
	dir := fixtures(t, "the fixture models and corpus live in the shared fixtures")
	text, err := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			src := openModel(t, filepath.Join(dir, name, "hf"))
			tmp := t.TempDir()
			f32 := openModel(t, writeGGUF(t, src, ir.F32, 0, filepath.Join(tmp, "f32.gguf"), nil))
			bf16 := openModel(t, writeGGUF(t, src, ir.BF16, 0, filepath.Join(tmp, "bf16.gguf"), nil))
			rep, err := Run(bf16, f32, Options{Text: string(text)[:40000], TextName: "brown-test.txt", Ctx: 128, Chunks: 3,
				Tolerances: Tolerances{MaxKLD: 1e-4, MinTop1: 0.99}})
			if err != nil {
				t.Fatal(err)
			}
			k := rep.KLD
			t.Logf("bf16 vs f32 GGUF: %d chunks of %d, %d scored: mean KLD %.3g, max %.3g, same top %.4f, PPL %.4f vs %.4f, %.0f tokens/s",
				k.Chunks, k.Ctx, k.Count, float64(k.KLDMean), float64(k.KLDMax), float64(k.SameTop), float64(k.PPL), float64(k.BasePPL), float64(k.TokensPerSecond))
			if !rep.Passed || !(k.KLDMean < 1e-4) || !(k.SameTop >= 0.99) {
				t.Errorf("bf16 against f32 GGUF: %v", rep.Failures)
			}
		})
	}
}

// TestPerturbedTensor flips the lowest mantissa bit of one element of one
// tensor (one bf16 ulp; in the f32 file a bit that float32 rounding never
// explains) and expects exactly that tensor to fail.
func TestPerturbedTensor(t *testing.T) {
	dir := fixtures(t, "the fixture models live in the shared fixtures")
	src := openModel(t, filepath.Join(dir, "gemma3-tiny", "hf"))
	const victim = "blk.2.attn_v.weight"
	for _, typ := range []ir.DType{ir.F32, ir.BF16} {
		elem := int64(1000) // row 3, column 232 of a [128, 256] tensor
		size := int64(4)
		if typ == ir.BF16 {
			size = 2
		}
		at := elem*size + size - 2 // the low byte of the top 16 bits
		path := writeGGUF(t, src, typ, 0, filepath.Join(t.TempDir(), "p.gguf"), func(m *ir.Model) {
			replaceTensor(t, m, victim, func(p []byte, off int64) {
				if at >= off && at < off+int64(len(p)) {
					p[at-off] ^= 1
				}
			})
		})
		rep, err := Run(openModel(t, path), src, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Passed || len(rep.Failures) != 1 {
			t.Fatalf("%s: want exactly one failure, got %v", typ, rep.Failures)
		}
		f := rep.Failures[0]
		t.Logf("%s: %s", typ, f)
		if f.Check != "weights" || f.Subject != victim || !strings.Contains(f.Message, "element [3, 232]") {
			t.Errorf("%s: failure %q does not name %s element [3, 232]", typ, f, victim)
		}
	}
}

// TestNormsOffsetTwice writes a GGUF whose norms hold 2+w (the +1 applied
// twice) and expects every norm tensor, and only those, to fail.
func TestNormsOffsetTwice(t *testing.T) {
	dir := fixtures(t, "the fixture models live in the shared fixtures")
	src := openModel(t, filepath.Join(dir, "gemma2-tiny", "hf"))
	once, err := ir.WithNormOffset(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	once.Config.NormOffset = 1 // pretend the 1+w still needs its +1
	twice, err := ir.WithNormOffset(once, 0)
	if err != nil {
		t.Fatal(err)
	}
	path := writeGGUF(t, twice, ir.BF16, 0, filepath.Join(t.TempDir(), "twice.gguf"), nil)
	rep, err := Run(openModel(t, path), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	norms := 0
	for _, x := range src.Tensors {
		if ir.IsNormWeight(x.Name) {
			norms++
		}
	}
	if rep.Passed || rep.Weights.Failed != norms {
		t.Fatalf("want the %d norm tensors to fail, got %d failures: %v", norms, rep.Weights.Failed, rep.Failures)
	}
	for _, f := range rep.Failures {
		if f.Check != "weights" || !ir.IsNormWeight(f.Subject) {
			t.Errorf("unexpected failure %s", f)
		}
	}
	t.Logf("first failure: %s", rep.Failures[0])
	if !strings.Contains(rep.Err().Error(), "blk.0.attn_norm.weight") {
		t.Errorf("error %q does not name blk.0.attn_norm.weight", rep.Err())
	}
}

// TestQuantizedGGUF checks that a sound Q4_K_M file passes the default
// floors and tolerances, and that swapping two layers' tensors or doubling
// a Q8_0 tensor's block scales (cosine still 1) fails naming the tensors.
func TestQuantizedGGUF(t *testing.T) {
	dir := fixtures(t, "the fixture models and goldens live in the shared fixtures")
	src := openModel(t, filepath.Join(dir, "gemma1-tiny", "hf"))
	g := readGoldens(t, dir, "gemma1-tiny")
	tmp := t.TempDir()
	path := writeGGUF(t, src, ir.Q4_K, quantize.FileQ4_K_M, filepath.Join(tmp, "q4km.gguf"), nil)
	q := openModel(t, path)
	rep, err := Run(q, src, Options{Goldens: g, Tolerances: DefaultTolerances})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Q4_K_M: types %v; worst cosine %.5f (%s), worst rel RMSE %.4f (%s); goldens max rel %.3g, min top-1 %.3f, max KLD %.3g",
		rep.Artifact.Types, float64(rep.Weights.WorstCosine), rep.Weights.WorstCosineTensor, float64(rep.Weights.WorstRelRMSE),
		rep.Weights.WorstRelTensor, float64(rep.Goldens.MaxRel), float64(rep.Goldens.MinTop1), float64(rep.Goldens.MaxKLD))
	if !rep.Passed {
		t.Errorf("sound Q4_K_M fails: %v", rep.Failures)
	}

	// Layers 1 and 2 swapped for attn_q.
	swapped := writeGGUF(t, src, ir.Q4_K, quantize.FileQ4_K_M, filepath.Join(tmp, "swap.gguf"), func(m *ir.Model) {
		a, b := m.Tensor("blk.1.attn_q.weight"), m.Tensor("blk.2.attn_q.weight")
		a.Source, b.Source = b.Source, a.Source
	})
	rep, err = Run(openModel(t, swapped), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range rep.Failures {
		names = append(names, f.Subject)
	}
	if strings.Join(names, ",") != "blk.1.attn_q.weight,blk.2.attn_q.weight" {
		t.Errorf("swapped tensors: failures %v", rep.Failures)
	}

	// Q8_0 with every block scale of ffn_up doubled (fp16 exponent + 1).
	scaled := writeGGUF(t, src, ir.Q8_0, quantize.FileQ8_0, filepath.Join(tmp, "scaled.gguf"), func(m *ir.Model) {
		replaceTensor(t, m, "blk.0.ffn_up.weight", func(p []byte, off int64) {
			for i := range p {
				if (off+int64(i))%34 == 0 && i+1 < len(p) {
					binary.LittleEndian.PutUint16(p[i:], binary.LittleEndian.Uint16(p[i:])+0x0400)
				}
			}
		})
	})
	rep, err = Run(openModel(t, scaled), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Subject != "blk.0.ffn_up.weight" || !strings.Contains(rep.Failures[0].Message, "relative RMS error") {
		t.Errorf("scaled Q8_0 tensor: failures %v", rep.Failures)
	} else {
		t.Logf("scaled: %s", rep.Failures[0])
	}
}

// TestMakeGoldens makes goldens for the fixture prompts and checks the ids
// and logits against gemma_pytorch's, through a write/read round trip.
func TestMakeGoldens(t *testing.T) {
	dir := fixtures(t, "the fixture models and goldens live in the shared fixtures")
	src := openModel(t, filepath.Join(dir, "gemma2-tiny", "hf"))
	ref := readGoldens(t, dir, "gemma2-tiny")
	md, err := runtime.Load(src, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := tokenizer.New(src.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	var prompts []string
	for _, p := range ref.Prompts {
		prompts = append(prompts, p.Text)
	}
	g, err := MakeGoldens(md, enc, prompts, "gemma2-tiny", "test")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := runtime.WriteGoldens(out, g); err != nil {
		t.Fatal(err)
	}
	back, err := runtime.ReadGoldens(out)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range back.Prompts {
		if !equalIDs(p.TokenIDs, ref.Prompts[i].TokenIDs) {
			t.Fatalf("prompt %d: ids %v, gemma_pytorch %v", i, p.TokenIDs, ref.Prompts[i].TokenIDs)
		}
		r, err := comparePrompt(p.Logits, ref.Prompts[i].Logits, back.Vocab, exact)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Passed {
			t.Errorf("prompt %d: %s", i, r.Reason)
		}
	}
}

func equalIDs(a, b []int32) bool {
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

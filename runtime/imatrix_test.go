package runtime

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// imatrixTextBytes is how much of brown-train.txt llama-imatrix read for
// the fixtures' llamacpp/imatrix.gguf (its dataset is brown-train-200k.txt).
const imatrixTextBytes = 200_000

// TestImatrixLlamaCpp computes the importance matrix of each fixture model
// with the settings llama-imatrix used for llamacpp/imatrix.gguf (chunk
// size and count from the file's metadata) and compares it entry by entry.
//
// llama.cpp computes with an f16 KV cache, f16 attention probabilities
// and a GELU read from an f16 table, and sums the squares in float32: each
// rounding is up to 2^-11 ≈ 4.9e-4 relative per activation but mostly
// unbiased, so sums over 12800 tokens agree better than that. Measured on
// all three models (|ours − llama| / llama per column): at most 9.3e-4
// (gemma3 blk.3.ffn_down; attn_output and ffn_down, whose inputs pass
// through the f16 attention and GELU, are 1e-4..9e-4, the others <= 2e-4),
// RMS over a tensor's columns at most 3.4e-4. The limits are 5e-3 on any
// column and 1e-3 on a tensor's RMS. They catch the plausible mistakes,
// measured on gemma3: chunks not starting with BOS move every tensor (RMS
// >= 9e-3, max >= 7e-2); chunks shifted by one token move every tensor's
// RMS to >= 1.5e-3; one chunk fewer changes every count.
func TestImatrixLlamaCpp(t *testing.T) {
	dir := fixtures(t, "llama.cpp's importance matrices live in the shared fixtures")
	text, err := os.ReadFile(filepath.Join(dir, "text", "brown-train.txt"))
	if err != nil {
		t.Fatal(err)
	}
	text = text[:imatrixTextBytes]
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			ref, err := gguf.ReadImatrix(filepath.Join(dir, name, "llamacpp", "imatrix.gguf"))
			if err != nil {
				t.Fatal(err)
			}
			im := openFixture(t, dir, name)
			m := mustLoad(t, im, Options{})
			tk, err := tokenizer.New(im.Tokenizer)
			if err != nil {
				t.Fatal(err)
			}
			opts := m.DefaultImatrixOptions()
			toks := append([]int32{opts.BOS}, tk.Encode(string(text))...)
			start := time.Now()
			r, err := ComputeImatrix(m, toks, int(ref.ChunkSize), int(ref.ChunkCount), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d chunks of %d tokens in %.1f s", r.Chunks, r.Ctx, time.Since(start).Seconds())
			if r.Chunks != int(ref.ChunkCount) || r.Ctx != int(ref.ChunkSize) {
				t.Errorf("computed %d chunks of %d, llama.cpp %d of %d", r.Chunks, r.Ctx, ref.ChunkCount, ref.ChunkSize)
			}
			compareImatrix(t, r, ref, 5e-3, 1e-3)
		})
	}
}

// compareImatrix checks r against a llama.cpp imatrix: the same entries,
// the same counts and per-column mean squares within maxRel (any column)
// and rmsRel (root mean square over a tensor's columns) relative.
func compareImatrix(t *testing.T, r *ImatrixResult, ref *gguf.Imatrix, maxRel, rmsRel float64) {
	t.Helper()
	var ours, theirs []string
	for n := range r.Entries {
		ours = append(ours, n)
	}
	for n := range ref.Entries {
		theirs = append(theirs, n)
	}
	slices.Sort(ours)
	slices.Sort(theirs)
	if !slices.Equal(ours, theirs) {
		t.Fatalf("entries differ:\nours  %v\nllama %v", ours, theirs)
	}
	var lines []string
	worst := 0.0
	for _, n := range ours {
		e, re := r.Entries[n], ref.Entries[n]
		if len(re.Counts) != 1 || re.Counts[0] != e.Count {
			t.Errorf("%s: count %d, llama.cpp %v", n, e.Count, re.Counts)
			continue
		}
		if len(re.Sums) != len(e.Sums) {
			t.Errorf("%s: %d columns, llama.cpp %d", n, len(e.Sums), len(re.Sums))
			continue
		}
		var mx, ss float64
		at := 0
		for j, s := range e.Sums {
			d := math.Abs(s-float64(re.Sums[j])) / math.Abs(float64(re.Sums[j]))
			if math.IsNaN(d) {
				d = math.Inf(1)
			}
			if d > mx {
				mx, at = d, j
			}
			ss += d * d
		}
		rms := math.Sqrt(ss / float64(len(e.Sums)))
		worst = max(worst, mx)
		lines = append(lines, fmt.Sprintf("%-26s max %.2e (col %d) rms %.2e", n, mx, at, rms))
		if mx > maxRel || rms > rmsRel {
			t.Errorf("%s: relative difference max %.3g (column %d: %g vs llama.cpp %g), rms %.3g; limits %g and %g",
				n, mx, at, e.Sums[at], re.Sums[at], rms, maxRel, rmsRel)
		}
	}
	t.Logf("max relative difference %.3g over %d entries; per tensor:\n%s", worst, len(ours), strings.Join(lines, "\n"))
}

// TestImatrixSynthetic checks on a random model that ComputeImatrix
// collects every block matrix (output.weight only with ProcessOutput and
// an untied output), counts every token, sums exactly what a direct
// computation of the first layer's inputs gives, and does not depend on
// workers, batch size or caching.
func TestImatrixSynthetic(t *testing.T) {
	c := synthConfig()
	c.TiedEmbeddings = false
	vals := synthValues(c, 5)
	im := synthModel(t, c, vals, ir.F32)
	toks := randomTokens(5*40+7, c.Vocab, 3)
	ctx := 40

	base := mustLoad(t, im, Options{Workers: 1, Cache: CacheNone})
	opts := base.DefaultImatrixOptions()
	var calls []int
	opts.Progress = func(done, total int) { calls = append(calls, done*100+total) }
	r, err := ComputeImatrix(base, toks, ctx, 0, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Chunks != 5 || r.Ctx != ctx || !slices.Equal(calls, []int{105, 205, 305, 405, 505}) {
		t.Fatalf("chunks %d ctx %d progress %v", r.Chunks, r.Ctx, calls)
	}
	if len(r.Entries) != 7*c.NumLayers {
		t.Errorf("%d entries, want %d", len(r.Entries), 7*c.NumLayers)
	}
	for i := 0; i < c.NumLayers; i++ {
		for _, s := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"} {
			n := fmt.Sprintf("blk.%d.%s.weight", i, s)
			e, ok := r.Entries[n]
			if !ok {
				t.Errorf("no entry %s", n)
				continue
			}
			if e.Count != int64(5*ctx) {
				t.Errorf("%s: count %d, want %d", n, e.Count, 5*ctx)
			}
			want := c.Hidden
			if s == "ffn_down" {
				want = c.FFN
			} else if s == "attn_output" {
				want = c.NumHeads * c.HeadDim
			}
			if len(e.Sums) != want {
				t.Errorf("%s: %d columns, want %d", n, len(e.Sums), want)
			}
		}
		if q, k := r.Entries[fmt.Sprintf("blk.%d.attn_q.weight", i)], r.Entries[fmt.Sprintf("blk.%d.attn_k.weight", i)]; !slices.Equal(q.Sums, k.Sums) {
			t.Errorf("layer %d: attn_q and attn_k share their input but not their sums", i)
		}
	}

	// Layer 0's attention input is the normalized scaled embedding: sum
	// its squares directly.
	want := make([]float64, c.Hidden)
	h, xn := make([]float32, c.Hidden), make([]float32, c.Hidden)
	scale := float32(math.Sqrt(float64(c.Hidden)))
	norm := make([]float32, c.Hidden)
	for i, w := range vals["blk.0.attn_norm.weight"] {
		norm[i] = 1 + w
	}
	for k := 0; k < 5; k++ {
		for i, tok := range toks[k*ctx : (k+1)*ctx] {
			if i == 0 {
				tok = opts.BOS
			}
			for j := range h {
				h[j] = vals["token_embd.weight"][int(tok)*c.Hidden+j] * scale
			}
			rmsNormRows(xn, h, norm, c.RMSNormEps, c.Hidden)
			for j, v := range xn {
				want[j] += float64(v) * float64(v)
			}
		}
	}
	if got := r.Entries["blk.0.attn_q.weight"].Sums; !slices.Equal(got, want) {
		t.Errorf("blk.0.attn_q sums differ from a direct computation: %v vs %v", got[:4], want[:4])
	}

	// Same result for other workers, batch sizes and caching; the batch
	// size 32 splits each chunk into 32 + 8 tokens, and the 8 are below
	// ImatrixMinRows, so only that one changes the counts.
	for _, o := range []Options{{Workers: 3, Cache: CacheAll}, {Workers: 2, BatchSize: 20}} {
		md := mustLoad(t, im, o)
		r2, err := ComputeImatrix(md, toks, ctx, 0, md.DefaultImatrixOptions())
		if err != nil {
			t.Fatal(err)
		}
		for n, e := range r.Entries {
			if e2 := r2.Entries[n]; e2.Count != e.Count || !slices.Equal(e2.Sums, e.Sums) {
				t.Errorf("%+v: %s differs", o, n)
			}
		}
	}
	md := mustLoad(t, im, Options{Workers: 2, BatchSize: 32})
	r3, err := ComputeImatrix(md, toks, ctx, 2, md.DefaultImatrixOptions())
	if err != nil {
		t.Fatal(err)
	}
	if e := r3.Entries["blk.1.ffn_down.weight"]; r3.Chunks != 2 || e.Count != 2*32 {
		t.Errorf("batch 32: %d chunks, count %d; want 2 and 64", r3.Chunks, e.Count)
	}

	// --process-output adds output.weight (untied), counting every token.
	o := base.DefaultImatrixOptions()
	o.ProcessOutput = true
	r4, err := ComputeImatrix(base, toks, ctx, 1, o)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := r4.Entries["output.weight"]; !ok || e.Count != int64(ctx) || len(e.Sums) != c.Hidden {
		t.Errorf("process output: entry %v %d", ok, e.Count)
	}
	// A tied model has no output.weight to collect.
	tied := synthModel(t, synthConfig(), synthValues(synthConfig(), 5), ir.F32)
	mt := mustLoad(t, tied, Options{})
	r5, err := ComputeImatrix(mt, toks, ctx, 1, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r5.Entries) != 7*c.NumLayers {
		t.Errorf("tied model with ProcessOutput: %d entries", len(r5.Entries))
	}

	// Errors.
	if _, err := ComputeImatrix(base, toks, 8, 0, opts); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("ctx 8: %v", err)
	}
	if _, err := ComputeImatrix(base, toks[:70], ctx, 0, opts); err == nil || !strings.Contains(err.Error(), "need at least 80") {
		t.Errorf("70 tokens: %v", err)
	}
	bad := slices.Clone(toks)
	bad[45] = int32(c.Vocab)
	if _, err := ComputeImatrix(base, bad, ctx, 0, opts); err == nil || !strings.Contains(err.Error(), "chunk 1") {
		t.Errorf("bad token: %v", err)
	}
}

// TestObserver checks that a State reports every product's input with its
// shape, and that removing the observer stops the reports.
func TestObserver(t *testing.T) {
	c := synthConfig()
	md := mustLoad(t, synthModel(t, c, synthValues(c, 1), ir.F32), Options{})
	st := md.NewState(16)
	seen := map[string]int{}
	st.SetObserver(func(name string, x []float32, n, cols int) {
		if len(x) != n*cols {
			t.Errorf("%s: %d values for %d×%d", name, len(x), n, cols)
		}
		seen[fmt.Sprintf("%s %d×%d", name, n, cols)]++
	})
	if _, err := st.ForwardLast(randomTokens(6, c.Vocab, 1)); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 7*c.NumLayers+1 || seen["blk.2.ffn_down.weight 6×128"] != 1 || seen["token_embd.weight 1×64"] != 1 {
		t.Errorf("observed %v", seen)
	}
	st.SetObserver(nil)
	clear(seen)
	if _, err := st.Forward(randomTokens(3, c.Vocab, 2)); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 0 {
		t.Errorf("observed %v after removing the observer", seen)
	}
}

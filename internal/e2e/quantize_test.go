// Package e2e holds integration tests that run gemmaconv's pipelines on
// the shared fixture models and compare the results with llama.cpp's
// recorded outputs.
package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/internal/llamaref"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

var fixtureModels = []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"}

func fixturesDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(llamaref.FixturesEnv)
	if dir == "" {
		t.Skip(llamaref.FixturesEnv + " not set: the quantization acceptance test compares with llama.cpp's outputs in the shared fixtures")
	}
	return dir
}

// section is one family of llama-quantize runs recorded in llamacpp.json.
type section struct {
	name    string // "quantize", "quantize_pure", "quantize_pure_imatrix"
	pure    bool
	imatrix bool
}

var sections = []section{{"quantize", false, false}, {"quantize_pure", true, false}, {"quantize_pure_imatrix", true, true}}

// tensorKey identifies one quantized tensor: the bytes depend only on the
// source tensor, the type and whether importance weights were used, so the
// many presets that share a choice share the work.
type tensorKey struct {
	name    string
	typ     ir.DType
	imatrix bool
}

// hashCache computes each tensor's sha256 once, whichever goroutine asks
// first.
type hashCache struct {
	m       *ir.Model // norm offset 0, as written to GGUF
	weights map[string][]float32
	mu      sync.Mutex
	entries map[tensorKey]*hashEntry
}

type hashEntry struct {
	once sync.Once
	sum  string
	err  error
}

func (c *hashCache) get(k tensorKey) (string, error) {
	c.mu.Lock()
	e := c.entries[k]
	if e == nil {
		e = &hashEntry{}
		c.entries[k] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.sum, e.err = c.compute(k) })
	return e.sum, e.err
}

func (c *hashCache) compute(k tensorKey) (string, error) {
	opts := quantize.ConvertOptions{Threads: 1}
	if k.imatrix {
		opts.Imatrix = map[string][]float32{}
		if w, ok := c.weights[k.name]; ok {
			opts.Imatrix[k.name] = w
		}
	}
	cm, err := quantize.Convert(c.m, map[string]ir.DType{k.name: k.typ}, opts)
	if err != nil {
		return "", err
	}
	t := cm.Tensor(k.name)
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(t.Source, 0, t.Size())); err != nil {
		return "", fmt.Errorf("tensor %s as %s: %w", k.name, k.typ, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fixtureModel opens a fixture's hf/ directory as the GGUF pipeline sees it.
func fixtureModel(t *testing.T, dir, name string) *ir.Model {
	t.Helper()
	m, err := ir.Open(filepath.Join(dir, name, "hf"), ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	gm, err := ir.WithNormOffset(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	return gm
}

func fixtureImatrix(t *testing.T, dir, name string) map[string][]float32 {
	t.Helper()
	im, err := gguf.ReadImatrix(filepath.Join(dir, name, "llamacpp", "imatrix.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	return im.Weights()
}

// TestQuantizeMatchesLlamaCpp plans and quantizes every fixture model for
// every preset llama-quantize was run with and checks that each tensor
// gets llama.cpp's type and llama.cpp's exact bytes, in llama.cpp's order.
func TestQuantizeMatchesLlamaCpp(t *testing.T) {
	dir := fixturesDir(t)
	type job struct {
		model, entry string
		cache        *hashCache
		key          tensorKey
		want         string
	}
	var (
		jobs    []job
		entries int
	)
	for _, name := range fixtureModels {
		ref, err := llamaref.LoadFixture(name)
		if err != nil {
			t.Fatal(err)
		}
		gm := fixtureModel(t, dir, name)
		cache := &hashCache{m: gm, weights: fixtureImatrix(t, dir, name), entries: map[tensorKey]*hashEntry{}}
		for _, sec := range sections {
			var names []string
			for n := range ref.Entries {
				if p, ok := strings.CutPrefix(n, sec.name+"."); ok && !strings.Contains(p, ".") {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			if len(names) == 0 {
				t.Errorf("%s: no %s entries in the reference", name, sec.name)
			}
			for _, en := range names {
				preset := strings.TrimPrefix(en, sec.name+".")
				ft, err := quantize.ParseFileType(preset)
				if err != nil {
					t.Errorf("%s %s: %v", name, en, err)
					continue
				}
				ps, err := quantize.PlanTensors(gm, quantize.PlanOptions{FileType: ft, Pure: sec.pure, Imatrix: sec.imatrix})
				if err != nil {
					t.Errorf("%s %s: %v", name, en, err)
					continue
				}
				entries++
				want := ref.Entries[en].Tensors
				var gotOrder, wantOrder []string
				for _, p := range ps {
					gotOrder = append(gotOrder, p.Name)
				}
				for _, w := range want {
					wantOrder = append(wantOrder, w.Name)
				}
				if !slices.Equal(gotOrder, wantOrder) {
					t.Errorf("%s %s: tensor order\n got %v\nwant %v", name, en, gotOrder, wantOrder)
					continue
				}
				for i, w := range want {
					p := ps[i]
					if p.To.String() != w.Type {
						t.Errorf("%s %s: %s planned as %s, llama.cpp chose %s", name, en, p.Name, p.To, w.Type)
						continue
					}
					if p.Bytes() != w.NBytes {
						t.Errorf("%s %s: %s: %d bytes, llama.cpp wrote %d", name, en, p.Name, p.Bytes(), w.NBytes)
					}
					// Tensors the imatrix has no entry for (token_embd) are
					// quantized unweighted, so they share that work.
					_, weighted := cache.weights[p.Name]
					jobs = append(jobs, job{name, en, cache, tensorKey{p.Name, p.To, sec.imatrix && weighted && p.To != p.From}, w.SHA256})
				}
			}
		}
	}

	// Hash in parallel; the cache makes each distinct tensor once.
	errs := make([]string, len(jobs))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				j := jobs[i]
				got, err := j.cache.get(j.key)
				switch {
				case err != nil:
					errs[i] = fmt.Sprintf("%s %s: %v", j.model, j.entry, err)
				case got != j.want:
					errs[i] = fmt.Sprintf("%s %s: %s (%s): sha256 %s, llama.cpp %s", j.model, j.entry, j.key.name, j.key.typ, got[:12], j.want[:12])
				}
			}
		}()
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()

	bad := map[string]int{}
	for i, e := range errs {
		if e != "" {
			bad[jobs[i].model+" "+jobs[i].entry]++
			t.Error(e)
		}
	}
	t.Logf("%d llama-quantize outputs of %d models, %d tensors: %d outputs match exactly", entries, len(fixtureModels), len(jobs), entries-len(bad))
	if entries != 3*(15+12+12) {
		t.Errorf("compared %d outputs, want %d (15 presets, 12 pure, 12 pure+imatrix per model)", entries, 3*(15+12+12))
	}
}

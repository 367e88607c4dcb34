package runtime

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

func TestArgmax(t *testing.T) {
	if Argmax([]float32{1, 5, 5, 2}) != 1 || Argmax([]float32{float32(math.NaN()), 1}) != 1 {
		t.Error("Argmax")
	}
}

// TestGenerateSynthetic checks greedy generation on a random model: each
// token is the argmax of the logits of the sequence so far, stop tokens
// end it, and bad arguments are handled.
func TestGenerateSynthetic(t *testing.T) {
	c := synthConfig()
	md := mustLoad(t, synthModel(t, c, synthValues(c, 3), ir.F32), Options{Workers: 2})
	prompt := randomTokens(5, c.Vocab, 4)
	var emitted []int32
	gen, err := Generate(md, prompt, 4, nil, func(id int32) { emitted = append(emitted, id) })
	if err != nil {
		t.Fatal(err)
	}
	if len(gen) != 4 || !slices.Equal(gen, emitted) {
		t.Fatalf("generated %v, emitted %v", gen, emitted)
	}
	for i := range gen {
		seq := append(append([]int32(nil), prompt...), gen[:i]...)
		l := mustLogits(t, md, seq)
		if want := int32(Argmax(l[(len(seq)-1)*c.Vocab:])); gen[i] != want {
			t.Errorf("token %d: generated %d, argmax of the sequence %d", i, gen[i], want)
		}
	}
	if stopped, err := Generate(md, prompt, 4, []int32{gen[0]}, nil); err != nil || len(stopped) != 0 {
		t.Errorf("stop at the first token: %v, %v", stopped, err)
	}
	if none, err := Generate(md, prompt, -1, nil, nil); err != nil || len(none) != 0 {
		t.Errorf("maxNew -1: %v, %v", none, err)
	}
	if _, err := Generate(md, nil, 4, nil, nil); err == nil {
		t.Error("empty prompt: no error")
	}
}

// TestGenerate checks that greedy generation's first token is the
// goldens' argmax at the prompt's last position, and that each further
// token is the argmax of the logits of the sequence so far.
func TestGenerate(t *testing.T) {
	dir := fixtures(t, "the fixture models and goldens live in the shared fixtures")
	src := openFixture(t, dir, "gemma3-tiny")
	ref, err := ReadGoldens(filepath.Join(dir, "gemma3-tiny", "goldens"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := Load(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := ref.Prompts[1]
	gen, err := Generate(md, p.TokenIDs, 6, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(gen) != 6 || gen[0] != p.Argmax[len(p.Argmax)-1] {
		t.Fatalf("generated %v; the goldens' next token is %d", gen, p.Argmax[len(p.Argmax)-1])
	}
	seq := append(append([]int32(nil), p.TokenIDs...), gen[:5]...)
	logits, err := md.Logits(seq)
	if err != nil {
		t.Fatal(err)
	}
	V := md.Config.Vocab
	if got := int32(Argmax(logits[(len(seq)-1)*V:])); got != gen[5] {
		t.Errorf("token 6: generated %d, argmax of the full sequence %d", gen[5], got)
	}
	stopped, err := Generate(md, p.TokenIDs, 6, []int32{gen[2]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for gen[want] != gen[2] {
		want++
	}
	if len(stopped) != want {
		t.Errorf("stop token %d: generated %v, want the %d tokens before it", gen[2], stopped, want)
	}
}

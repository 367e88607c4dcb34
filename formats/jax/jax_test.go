package jax

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

func fixtures(t *testing.T) string {
	t.Helper()
	d := os.Getenv("GEMMACONV_FIXTURES")
	if d == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the tiny Gemma models (jax/params.msgpack beside hf/) live in shared/fixtures")
	}
	return d
}

// readAll reads a tensor through its source in uneven pieces, exercising
// reads that straddle rows and bands.
func readAll(t *testing.T, tn *ir.Tensor) []byte {
	t.Helper()
	b := make([]byte, tn.Size())
	piece := int64(tn.RowBytes()*3 + 6)
	for off := int64(0); off < int64(len(b)); off += piece {
		end := min(off+piece, int64(len(b)))
		if n, err := tn.Source.ReadAt(b[off:end], off); n != int(end-off) {
			t.Fatalf("%s: ReadAt(%d, %d) = %d, %v", tn.Name, end-off, off, n, err)
		}
	}
	return b
}

func compareModels(t *testing.T, got, want *ir.Model) {
	t.Helper()
	if !reflect.DeepEqual(got.Config, want.Config) {
		t.Errorf("config:\n got %+v\nwant %+v", got.Config, want.Config)
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		g := got.Tensors[i]
		if g.Name != w.Name || g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) {
			t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, g.Name, g.DType, g.Shape, w.Name, w.DType, w.Shape)
			continue
		}
		if !bytes.Equal(readAll(t, g), readAll(t, w)) {
			t.Errorf("tensor %s: bytes differ", g.Name)
		}
	}
}

func TestFlaxMatchesSafetensors(t *testing.T) {
	fx := fixtures(t)
	for _, name := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fx, name)
			jm, err := ir.Open(filepath.Join(dir, "jax", "params.msgpack"), ir.OpenOptions{
				ConfigPath: filepath.Join(dir, "hf", "config.json"), TokenizerPath: filepath.Join(dir, "hf", "tokenizer.model")})
			if err != nil {
				t.Fatal(err)
			}
			defer jm.Close()
			if jm.Provenance.Format != FlaxFormat {
				t.Errorf("format %q", jm.Provenance.Format)
			}
			hm, err := safetensors.OpenHF(filepath.Join(dir, "hf"), ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer hm.Close()
			compareModels(t, jm, hm)
			padded := false
			for _, n := range jm.Provenance.Notes {
				padded = padded || strings.Contains(n, "dropped 128 padding rows")
			}
			if padded != (name != "gemma3-tiny") {
				t.Errorf("padding note present = %v; notes %q", padded, jm.Provenance.Notes)
			}
		})
	}
}

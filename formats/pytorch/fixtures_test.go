package pytorch

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

func fixtures(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the gemma_pytorch.ckpt fixtures live in ../shared/fixtures")
	}
	return dir
}

// readAll reads a tensor's whole data through its lazy source.
func readAll(t *testing.T, x *ir.Tensor) []byte {
	t.Helper()
	b := make([]byte, x.Size())
	if err := x.ReadRows(0, x.Rows(), b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixtureCheckpoints opens gemma_pytorch's own checkpoints of the three
// tiny models and checks every tensor byte for byte against the safetensors
// reader's view of the Hugging Face export of the same weights.
func TestFixtureCheckpoints(t *testing.T) {
	root := fixtures(t)
	for _, name := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(root, name)
			hf := filepath.Join(dir, "hf")
			m, err := ir.Open(filepath.Join(dir, "gemma_pytorch.ckpt"), ir.OpenOptions{
				ConfigPath:    filepath.Join(hf, "config.json"),
				TokenizerPath: filepath.Join(hf, "tokenizer.model"),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Provenance.Format != FormatName {
				t.Fatalf("format %q", m.Provenance.Format)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if m.Tokenizer == nil || len(m.Tokenizer.Pieces) != m.Config.Vocab {
				t.Fatalf("tokenizer not loaded or wrong size")
			}
			if m.Config.NormOffset != 1 {
				t.Fatalf("NormOffset %v", m.Config.NormOffset)
			}
			ref, err := safetensors.OpenHF(hf, ir.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			if len(ref.Tensors) != len(m.Tensors) {
				t.Fatalf("%d tensors, safetensors reader has %d", len(m.Tensors), len(ref.Tensors))
			}
			for i, x := range m.Tensors {
				r := ref.Tensors[i]
				if x.Name != r.Name || x.DType != r.DType || !slices.Equal(x.Shape, r.Shape) {
					t.Fatalf("tensor %d: %s %s %v, safetensors reader %s %s %v", i, x.Name, x.DType, x.Shape, r.Name, r.DType, r.Shape)
				}
				if x.DType != ir.BF16 {
					t.Errorf("%s: stored as %s, want BF16 kept", x.Name, x.DType)
				}
				if !bytes.Equal(readAll(t, x), readAll(t, r)) {
					t.Errorf("%s: bytes differ from the safetensors reader's", x.Name)
				}
			}
			var split bool
			for _, n := range m.Provenance.Notes {
				split = split || strings.Contains(n, "qkv_proj")
			}
			if !split {
				t.Errorf("no provenance note about the fused qkv split: %v", m.Provenance.Notes)
			}
			// Inference without a config must agree with config.json on
			// what shapes tell; these tiny models are no released size, so
			// it must refuse and ask for --config.
			_, err = Open(filepath.Join(dir, "gemma_pytorch.ckpt"), ir.OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), "--config") {
				t.Errorf("open without config: %v, want an error asking for --config", err)
			}
		})
	}
}

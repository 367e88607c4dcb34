package gguf_test

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/internal/llamaref"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// zeros is a tensor source of zero bytes: these tests compare metadata
// and tensor layout, not data (the converter's integration test does).
type zeros struct{ size int64 }

func (z zeros) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.size-off))
	clear(p[:n])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fixtureModel builds the fixture's model by hand from its Hugging Face
// config.json and tokenizer.model, with zero tensors of the types
// llama.cpp's converter gives an outtype (1-D tensors stay F32).
func fixtureModel(t *testing.T, dir string, outtype ir.DType) *ir.Model {
	t.Helper()
	hf := filepath.Join(dir, "hf")
	data, err := os.ReadFile(filepath.Join(hf, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ir.ConfigFromHF(data)
	if err != nil {
		t.Fatal(err)
	}
	c.NormOffset = 0 // the tensors are stand-ins; GGUF's convention
	tok, err := tokenizer.LoadSentencePiece(filepath.Join(hf, "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	m := &ir.Model{Config: c, Tokenizer: tok, Provenance: ir.Provenance{Format: "safetensors", Path: hf}}
	for _, spec := range ir.ExpectedTensors(c) {
		ty := outtype
		if len(spec.Shape) == 1 {
			ty = ir.F32
		}
		tt := &ir.Tensor{Name: spec.Name, DType: ty, Shape: spec.Shape}
		tt.Source = zeros{tt.Size()}
		m.Tensors = append(m.Tensors, tt)
	}
	return m
}

// TestMatchesLlamaCppConvert writes each fixture model as llama.cpp's
// convert_hf_to_gguf.py would for f32, f16 and bf16 and compares every
// metadata key (type, value, order) and every tensor's name, type, shape,
// size and order with llamacpp.json.
func TestMatchesLlamaCppConvert(t *testing.T) {
	root := os.Getenv(llamaref.FixturesEnv)
	if root == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the llama.cpp reference metadata lives in the shared fixtures")
	}
	for _, model := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		ref, err := llamaref.Load(filepath.Join(root, model, "llamacpp.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, ot := range []struct {
			name string
			t    ir.DType
		}{{"f32", ir.F32}, {"f16", ir.F16}, {"bf16", ir.BF16}} {
			t.Run(model+"/"+ot.name, func(t *testing.T) {
				entry, err := ref.Entry("convert." + ot.name)
				if err != nil {
					t.Fatal(err)
				}
				m := fixtureModel(t, filepath.Join(root, model), ot.t)
				out := filepath.Join(t.TempDir(), "model.gguf")
				if err := gguf.Write(out, m, gguf.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
				diffs, err := llamaref.Compare(out, entry, llamaref.Options{})
				if err != nil {
					t.Fatal(err)
				}
				var real []llamaref.Difference
				for _, d := range diffs {
					if d.Kind == "tensor" && d.Field == "sha256" {
						continue // stand-in data
					}
					real = append(real, d)
				}
				if len(real) > 0 {
					t.Errorf("%d differences from llama.cpp:\n%s", len(real), llamaref.Report(real, 40))
				}
				f, err := gguf.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if v, _ := f.Lookup("general.name"); v != "Hf" {
					t.Errorf("general.name = %v, want Hf (derived like llama.cpp)", v)
				}
				if v, _ := f.Lookup("general.size_label"); v != wantKV(t, entry, "general.size_label") {
					t.Errorf("general.size_label = %v", v)
				}

				// The file maps back to the config we started from.
				back, err := gguf.OpenModel(out)
				if err != nil {
					t.Fatal(err)
				}
				defer back.Close()
				if !reflect.DeepEqual(back.Config, m.Config) {
					t.Errorf("config read back:\n got %+v\nwant %+v", back.Config, m.Config)
				}
			})
		}
	}
}

func wantKV(t *testing.T, e *llamaref.Entry, key string) string {
	for _, kv := range e.KV {
		if kv.Key == key {
			var s string
			if err := jsonString(kv.Value, &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	t.Fatalf("reference has no %s", key)
	return ""
}

func jsonString(raw []byte, s *string) error { return json.Unmarshal(raw, s) }

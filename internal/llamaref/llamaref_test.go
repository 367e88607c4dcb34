package llamaref

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
)

type bytesSource []byte

func (b bytesSource) ReadAt(p []byte, off int64) (int, error) { return copy(p, b[off:]), nil }

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// sample writes a small file and returns it with an Entry describing it
// exactly as llamacpp.json would.
func sample(t *testing.T) (string, *Entry) {
	t.Helper()
	data := make([]byte, 2*8*4)
	for i := range data {
		data[i] = byte(i)
	}
	kvs := []ir.KV{
		{Key: "general.architecture", Value: "gemma"},
		{Key: "general.name", Value: "X"},
		{Key: "gemma.attention.layer_norm_rms_epsilon", Value: float32(1e-6)},
		{Key: "gemma.block_count", Value: uint32(4)},
		{Key: "tokenizer.ggml.tokens", Value: []string{"<pad>", "<end_of_turn>", "a"}},
		{Key: "tokenizer.ggml.scores", Value: []float32{0, -1, -2}},
		{Key: "tokenizer.ggml.eot_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
	}
	path := filepath.Join(t.TempDir(), "s.gguf")
	ts := []*ir.Tensor{{Name: "token_embd.weight", DType: ir.F32, Shape: []int64{2, 8}, Source: bytesSource(data)}}
	if err := gguf.WriteFile(path, kvs, ts, gguf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	scores, _ := ElementBytes([]float32{0, -1, -2})
	e := &Entry{
		KV: []KV{
			{Key: "general.architecture", Type: []string{"STRING"}, Value: raw(`"gemma"`)},
			{Key: "general.name", Type: []string{"STRING"}, Value: raw(`"Hf"`)},
			{Key: "gemma.attention.layer_norm_rms_epsilon", Type: []string{"FLOAT32"}, Value: raw("9.999999974752427e-07")},
			{Key: "gemma.block_count", Type: []string{"UINT32"}, Value: raw("4")},
			{Key: "tokenizer.ggml.tokens", Type: []string{"ARRAY", "STRING"}, Len: 3, SHA256: hexSHA([]byte("<pad><end_of_turn>a"))},
			{Key: "tokenizer.ggml.scores", Type: []string{"ARRAY", "FLOAT32"}, Len: 3, SHA256: hexSHA(scores)},
			{Key: "tokenizer.ggml.eot_token_id", Type: []string{"UINT32"}, Value: raw("107")},
			{Key: "tokenizer.ggml.add_bos_token", Type: []string{"BOOL"}, Value: raw("true")},
		},
		Tensors: []Tensor{{Name: "token_embd.weight", Type: "F32", Shape: []int64{8, 2}, NBytes: 64, SHA256: hexSHA(data)}},
	}
	return path, e
}

func TestCompareMatches(t *testing.T) {
	path, e := sample(t)
	diffs, err := Compare(path, e, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 0 {
		t.Fatalf("unexpected differences:\n%s", Report(diffs, 0))
	}
	// StrictEOT rejects the looked-up id; ignoring nothing reports the name.
	diffs, _ = Compare(path, e, Options{StrictEOT: true, IgnoreKeys: []string{}})
	if len(diffs) != 2 {
		t.Fatalf("want 2 differences, got:\n%s", Report(diffs, 0))
	}
}

func TestCompareFindsDifferences(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(e *Entry)
		field string
	}{
		{"value", func(e *Entry) { e.KV[3].Value = json.RawMessage("5") }, "value"},
		{"float value", func(e *Entry) { e.KV[2].Value = json.RawMessage("1e-06") }, "value"},
		{"type", func(e *Entry) { e.KV[3].Type = []string{"UINT64"} }, "type"},
		{"array len", func(e *Entry) { e.KV[4].Len = 4 }, "len"},
		{"array sha", func(e *Entry) { e.KV[5].SHA256 = strings.Repeat("0", 64) }, "sha256"},
		{"missing key", func(e *Entry) {
			e.KV = append(e.KV, KV{Key: "x.y", Type: []string{"BOOL"}, Value: json.RawMessage("true")})
		}, "missing"},
		{"extra key", func(e *Entry) { e.KV = append(e.KV[:7:7], e.KV[7+1:]...) }, "extra"},
		{"key order", func(e *Entry) { e.KV[2], e.KV[3] = e.KV[3], e.KV[2] }, "order"},
		{"tensor type", func(e *Entry) { e.Tensors[0].Type = "F16" }, "type"},
		{"tensor shape", func(e *Entry) { e.Tensors[0].Shape = []int64{2, 8} }, "shape"},
		{"tensor bytes", func(e *Entry) { e.Tensors[0].NBytes = 32 }, "nbytes"},
		{"tensor sha", func(e *Entry) { e.Tensors[0].SHA256 = strings.Repeat("a", 64) }, "sha256"},
		{"missing tensor", func(e *Entry) { e.Tensors = append(e.Tensors, Tensor{Name: "output.weight", Type: "F32"}) }, "missing"},
		{"extra tensor", func(e *Entry) { e.Tensors = nil }, "extra"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, e := sample(t)
			c.edit(e)
			diffs, err := Compare(path, e, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(diffs) != 1 || diffs[0].Field != c.field {
				t.Fatalf("want one %q difference, got:\n%s", c.field, Report(diffs, 0))
			}
			if diffs[0].String() == "" {
				t.Error("empty description")
			}
		})
	}
}

func TestLoadFixture(t *testing.T) {
	if os.Getenv(FixturesEnv) == "" {
		t.Skip("GEMMACONV_FIXTURES not set: llamacpp.json lives in the shared fixtures")
	}
	r, err := LoadFixture("gemma3-tiny")
	if err != nil {
		t.Fatal(err)
	}
	e, err := r.Entry("convert.f32")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.KV) < 20 || e.KV[0].Key != "general.architecture" || len(e.Tensors) != 80 {
		t.Errorf("convert.f32: %d keys (first %s), %d tensors", len(e.KV), e.KV[0].Key, len(e.Tensors))
	}
	q, err := r.Entry("quantize.Q4_K_M")
	if err != nil {
		t.Fatal(err)
	}
	if len(q.KV) != 0 || len(q.Tensors) != 80 || q.Tensors[1].Type == "" {
		t.Errorf("quantize.Q4_K_M: %d keys, %d tensors", len(q.KV), len(q.Tensors))
	}
	if _, err := r.Entry("quantize_pure_imatrix.Q4_0"); err != nil {
		t.Error(err)
	}
	if _, err := r.Entry("convert.q9"); err == nil || !strings.Contains(err.Error(), "convert.f16") {
		t.Errorf("unknown entry: %v", err)
	}
}

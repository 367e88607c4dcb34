package testmodel

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	_ "github.com/gemmaconv/gemmaconv/formats/jax"
	_ "github.com/gemmaconv/gemmaconv/formats/pytorch"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

// sameAsHF opens the checkpoint at path (format wantFormat, config and
// tokenizer from WriteHF's directory hf) and checks that it holds
// exactly the tensors of WriteHF's model for the same (cfg, seed, dtype).
func sameAsHF(t *testing.T, hf, path, wantFormat string) {
	t.Helper()
	want, err := ir.Open(hf, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	got, err := ir.Open(path, ir.OpenOptions{ConfigPath: filepath.Join(hf, "config.json"), TokenizerPath: filepath.Join(hf, "tokenizer.model")})
	if err != nil {
		t.Fatalf("%s: %v", wantFormat, err)
	}
	defer got.Close()
	if got.Provenance.Format != wantFormat {
		t.Errorf("read as %s, want %s", got.Provenance.Format, wantFormat)
	}
	if !reflect.DeepEqual(got.Config, want.Config) {
		t.Errorf("config %+v, want %+v", got.Config, want.Config)
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
		gb, wb := make([]byte, g.Size()), make([]byte, w.Size())
		if err := g.ReadRows(0, g.Rows(), gb); err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		if err := w.ReadRows(0, w.Rows(), wb); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gb, wb) {
			t.Errorf("%s: bytes differ from WriteHF's", g.Name)
		}
	}
}

// formatCases are the tiny models every generator is checked on: each
// family in bf16, and f32/f16 once each. Gemma 1 with as many kv heads as
// heads exercises JAX's fused qkv_einsum.
func formatCases() []struct {
	name  string
	cfg   ir.Config
	dtype ir.DType
} {
	mha := TinyConfig(ir.Gemma1)
	mha.NumKVHeads = mha.NumHeads
	g3 := TinyConfig(ir.Gemma3)
	g3.FFN = 96 // not a multiple of the chunk rows
	return []struct {
		name  string
		cfg   ir.Config
		dtype ir.DType
	}{
		{"gemma1-bf16", TinyConfig(ir.Gemma1), ir.BF16},
		{"gemma1-mha-f32", mha, ir.F32},
		{"gemma2-bf16", TinyConfig(ir.Gemma2), ir.BF16},
		{"gemma2-f16", TinyConfig(ir.Gemma2), ir.F16},
		{"gemma3-bf16", g3, ir.BF16},
	}
}

func writeHFFor(t *testing.T, cfg ir.Config, dtype ir.DType) string {
	t.Helper()
	hf := filepath.Join(t.TempDir(), "hf")
	if err := WriteHF(hf, cfg, 7, dtype); err != nil {
		t.Fatal(err)
	}
	return hf
}

func TestWritePyTorchCkpt(t *testing.T) {
	needTokenizer(t)
	for _, c := range formatCases() {
		t.Run(c.name, func(t *testing.T) {
			hf := writeHFFor(t, c.cfg, c.dtype)
			p := filepath.Join(t.TempDir(), "model.ckpt")
			if err := WritePyTorchCkpt(p, c.cfg, 7, c.dtype); err != nil {
				t.Fatal(err)
			}
			sameAsHF(t, hf, p, "pytorch")
			if c.name == "gemma2-bf16" {
				checkWithPython(t, p, c.cfg)
			}
			// Deterministic.
			p2 := filepath.Join(t.TempDir(), "model.ckpt")
			if err := WritePyTorchCkpt(p2, c.cfg, 7, c.dtype); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(p2)
			if !bytes.Equal(a, b) {
				t.Error("two writes differ")
			}
		})
	}
}

// pyCheck unpickles data.pkl with CPython's own pickle module (torch's
// globals stubbed, as torch.load's weights_only unpickler resolves them)
// and checks the zip layout torch's reader relies on: every storage entry
// stored, 64-byte aligned, of numel × element size bytes.
const pyCheck = `
import pickle, sys, zipfile, struct, collections
path, es = sys.argv[1], int(sys.argv[2])
z = zipfile.ZipFile(path)
names = z.namelist()
prefix = names[0].split('/')[0]
assert names[0] == prefix + '/data.pkl', names[:3]
for want in ('byteorder', 'version', '.format_version', '.data/serialization_id'):
    assert prefix + '/' + want in names, want
assert z.read(prefix + '/byteorder') == b'little'
class Storage:
    def __init__(self, key, numel): self.key, self.numel = key, numel
def rebuild(storage, offset, size, stride, requires_grad, hooks):
    assert isinstance(hooks, collections.OrderedDict) and not requires_grad and offset == 0
    return (storage, tuple(size), tuple(stride))
class U(pickle.Unpickler):
    def find_class(self, mod, name):
        if (mod, name) == ('torch._utils', '_rebuild_tensor_v2'): return rebuild
        if (mod, name) == ('collections', 'OrderedDict'): return collections.OrderedDict
        if mod == 'torch' and name.endswith('Storage'): return name
        raise pickle.UnpicklingError('global %s.%s' % (mod, name))
    def persistent_load(self, pid):
        assert pid[0] == 'storage' and pid[3] == 'cpu', pid
        return Storage(pid[2], pid[4])
obj = U(z.open(prefix + '/data.pkl')).load()
sd = obj['model_state_dict']
assert type(sd) is collections.OrderedDict
assert sd._metadata[''] == {'version': 1}
f = open(path, 'rb')
for name, (st, size, stride) in sd.items():
    info = z.getinfo(prefix + '/data/' + st.key)
    assert info.compress_type == zipfile.ZIP_STORED
    f.seek(info.header_offset)
    h = f.read(30)
    nl, el = struct.unpack('<HH', h[26:30])
    assert (info.header_offset + 30 + nl + el) % 64 == 0, name
    n = 1
    for d in size: n *= d
    assert st.numel == n and info.file_size == n * es, (name, st.numel, n, info.file_size)
    print(name, list(size))
`

func checkWithPython(t *testing.T, path string, cfg ir.Config) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Log("no python3: skipping the CPython pickle check")
		return
	}
	out, err := exec.Command(py, "-c", pyCheck, path, "2").CombinedOutput()
	if err != nil {
		t.Fatalf("python3 check: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	q := cfg.NumHeads*cfg.HeadDim + 2*cfg.NumKVHeads*cfg.HeadDim
	if lines[0] != fmt.Sprintf("embedder.weight [%d, %d]", cfg.Vocab, cfg.Hidden) ||
		lines[1] != fmt.Sprintf("model.layers.0.self_attn.qkv_proj.weight [%d, %d]", q, cfg.Hidden) ||
		lines[len(lines)-1] != fmt.Sprintf("model.norm.weight [%d]", cfg.Hidden) {
		t.Errorf("python3 sees:\n%s", out)
	}
}

func TestWriteFlaxMsgpack(t *testing.T) {
	needTokenizer(t)
	for _, c := range formatCases() {
		t.Run(c.name, func(t *testing.T) {
			hf := writeHFFor(t, c.cfg, c.dtype)
			p := filepath.Join(t.TempDir(), "params.msgpack")
			if err := WriteFlaxMsgpack(p, c.cfg, 7, c.dtype); err != nil {
				t.Fatal(err)
			}
			sameAsHF(t, hf, p, "flax")
		})
	}
}

// TestWriteFlaxSmallBuffers shrinks the transpose band (so that leaves
// spill and take many bands) and flax's chunk limit (so that arrays are
// written in chunked form, with a short last chunk).
func TestWriteFlaxSmallBuffers(t *testing.T) {
	needTokenizer(t)
	ob, os_, oc := transposeBandBytes, transposeStripBytes, flaxMaxChunk
	transposeBandBytes, transposeStripBytes, flaxMaxChunk = 100, 64, 3000
	defer func() { transposeBandBytes, transposeStripBytes, flaxMaxChunk = ob, os_, oc }()
	for _, c := range formatCases()[:3] {
		t.Run(c.name, func(t *testing.T) {
			hf := writeHFFor(t, c.cfg, c.dtype)
			dir := t.TempDir()
			p := filepath.Join(dir, "params.msgpack")
			if err := WriteFlaxMsgpack(p, c.cfg, 7, c.dtype); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(p)
			if !bytes.Contains(data, []byte("__msgpack_chunked_array__")) {
				t.Error("no chunked arrays")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("scratch files left: %v", ents)
			}
			sameAsHF(t, hf, p, "flax")
		})
	}
}

func TestWriteOrbaxZarr(t *testing.T) {
	needTokenizer(t)
	for i, c := range formatCases() {
		t.Run(c.name, func(t *testing.T) {
			hf := writeHFFor(t, c.cfg, c.dtype)
			d := filepath.Join(t.TempDir(), "ckpt")
			if err := WriteOrbaxZarr(d, c.cfg, 7, c.dtype); err != nil {
				t.Fatal(err)
			}
			sameAsHF(t, hf, d, "orbax")
			// Small chunks: many per array, padded edge chunks, raw or zstd.
			d2 := filepath.Join(t.TempDir(), "ckpt")
			if err := writeOrbaxZarr(d2, c.cfg, 7, c.dtype, orbaxOptions{chunkBytes: 2000, zstd: i%2 == 0}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(d2, "transformer", "layer_0", "mlp.linear", "1.0")); err != nil {
				t.Errorf("small chunks: %v", err)
			}
			sameAsHF(t, hf, d2, "orbax")
		})
	}
}

func TestRowChunks(t *testing.T) {
	for _, c := range []struct {
		shape  []int64
		target int64
		want   []int64
		k      int
	}{
		{[]int64{256000, 2048}, 4 << 20, []int64{1024, 2048}, 0},
		{[]int64{2, 2048, 16384}, 4 << 20, []int64{1, 128, 16384}, 1},
		{[]int64{8, 2048, 256}, 4 << 20, []int64{4, 2048, 256}, 0},
		{[]int64{2048}, 4 << 20, []int64{2048}, 0},
		{[]int64{2048}, 100, []int64{50}, 0},
		{[]int64{3, 5, 7}, 1 << 20, []int64{3, 5, 7}, 0},
		{[]int64{3, 5, 7}, 30, []int64{1, 2, 7}, 1},
	} {
		cs, k := rowChunks(c.shape, 2, c.target)
		if !reflect.DeepEqual(cs, c.want) || k != c.k {
			t.Errorf("rowChunks(%v, %d) = %v, %d; want %v, %d", c.shape, c.target, cs, k, c.want, c.k)
		}
	}
}

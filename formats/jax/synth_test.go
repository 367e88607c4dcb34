package jax

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/klauspost/compress/zstd"
)

const goldenTokenizer = "../../goldens/jax/tokenizer.model"

// synth is a small random Gemma parameter tree in the google-deepmind
// layout, with the canonical tensors it must map to computed by plain
// index arithmetic (independently of the lazy transposing sources).
type synth struct {
	family                ir.Family
	layers, d, n, k, h, f int
	vocab, pad            int
	fused, gatingFD       bool
	leaves                []synthLeaf
	want                  map[string]synthTensor
}

type synthLeaf struct {
	keyPath []string // Kaggle-style: {"transformer/layer_0/attn/q_einsum": {"w": ...}}
	shape   []int64
	data    []byte // bf16
}

type synthTensor struct {
	shape []int64
	data  []byte
}

func newSynth(family ir.Family, fused, gatingFD bool, d, f int) *synth {
	s := &synth{family: family, layers: 2, d: d, n: 2, k: 1, h: 8, f: f, vocab: 4096, pad: 128, fused: fused, gatingFD: gatingFD}
	if fused {
		s.k = s.n
	}
	if family == ir.Gemma3 {
		s.pad = 0
	}
	s.want = map[string]synthTensor{}
	rng := rand.New(rand.NewSource(int64(d*1000 + f)))
	leaf := func(module, name string, shape ...int64) []byte {
		n := int64(2)
		for _, x := range shape {
			n *= x
		}
		b := make([]byte, n)
		rng.Read(b)
		s.leaves = append(s.leaves, synthLeaf{[]string{module, name}, shape, b})
		return b
	}
	D, N, K, H, F := int64(d), int64(s.n), int64(s.k), int64(s.h), int64(f)
	at := func(b []byte, i int64) []byte { return b[2*i : 2*i+2] }
	// mat builds a [rows, cols] bf16 tensor from get(r, c) = element index.
	mat := func(name string, rows, cols int64, src []byte, get func(r, c int64) int64) {
		out := make([]byte, 0, 2*rows*cols)
		for r := int64(0); r < rows; r++ {
			for c := int64(0); c < cols; c++ {
				out = append(out, at(src, get(r, c))...)
			}
		}
		s.want[name] = synthTensor{[]int64{rows, cols}, out}
	}
	V := int64(s.vocab)
	emb := leaf("transformer/embedder", "input_embedding", V+int64(s.pad), D)
	s.want["token_embd.weight"] = synthTensor{[]int64{V, D}, emb[:2*V*D]}
	for i := 0; i < s.layers; i++ {
		lp := fmt.Sprintf("transformer/layer_%d/", i)
		bn := fmt.Sprintf("blk.%d.", i)
		norm := func(module, name string, w int64) {
			b := leaf(lp+module, "scale", w)
			s.want[bn+name] = synthTensor{[]int64{w}, b}
		}
		norm("pre_attention_norm", "attn_norm.weight", D)
		norm("pre_ffw_norm", "ffn_norm.weight", D)
		if family != ir.Gemma1 {
			norm("post_attention_norm", "post_attention_norm.weight", D)
			norm("post_ffw_norm", "post_ffw_norm.weight", D)
		}
		if family == ir.Gemma3 {
			norm("attn/_query_norm", "attn_q_norm.weight", H)
			norm("attn/_key_norm", "attn_k_norm.weight", H)
		}
		// q[n*H+h, d] = w[n, d, h]; k, v likewise from the kv (or qkv) einsum.
		heads := func(name string, src []byte, base, heads int64) {
			mat(bn+name, heads*H, D, src, func(r, c int64) int64 {
				n, h := r/H, r%H
				return base + (n*D+c)*H + h
			})
		}
		if fused {
			w := leaf(lp+"attn/qkv_einsum", "w", 3, N, D, H)
			heads("attn_q.weight", w, 0, N)
			heads("attn_k.weight", w, N*D*H, N)
			heads("attn_v.weight", w, 2*N*D*H, N)
		} else {
			q := leaf(lp+"attn/q_einsum", "w", N, D, H)
			kv := leaf(lp+"attn/kv_einsum", "w", 2, K, D, H)
			heads("attn_q.weight", q, 0, N)
			heads("attn_k.weight", kv, 0, K)
			heads("attn_v.weight", kv, K*D*H, K)
		}
		o := leaf(lp+"attn/attn_vec_einsum", "w", N, H, D)
		// out[d, n*H+h] = o[n, h, d]
		mat(bn+"attn_output.weight", D, N*H, o, func(r, c int64) int64 { return c*D + r })
		if gatingFD {
			g := leaf(lp+"mlp", "gating_einsum", 2, F, D)
			mat(bn+"ffn_gate.weight", F, D, g, func(r, c int64) int64 { return r*D + c })
			mat(bn+"ffn_up.weight", F, D, g, func(r, c int64) int64 { return F*D + r*D + c })
		} else {
			g := leaf(lp+"mlp", "gating_einsum", 2, D, F)
			mat(bn+"ffn_gate.weight", F, D, g, func(r, c int64) int64 { return c*F + r })
			mat(bn+"ffn_up.weight", F, D, g, func(r, c int64) int64 { return D*F + c*F + r })
		}
		lin := leaf(lp+"mlp", "linear", F, D)
		mat(bn+"ffn_down.weight", D, F, lin, func(r, c int64) int64 { return c*D + r })
	}
	fn := leaf("transformer/final_norm", "scale", D)
	s.want["output_norm.weight"] = synthTensor{[]int64{D}, fn}
	return s
}

func (s *synth) hfConfig(t *testing.T, dir string) string {
	t.Helper()
	mt := map[ir.Family]string{ir.Gemma1: "gemma", ir.Gemma2: "gemma2", ir.Gemma3: "gemma3_text"}[s.family]
	cfg := map[string]any{"model_type": mt, "vocab_size": s.vocab, "hidden_size": s.d, "intermediate_size": s.f,
		"num_hidden_layers": s.layers, "num_attention_heads": s.n, "num_key_value_heads": s.k, "head_dim": s.h,
		"sliding_window": 16}
	b, _ := json.Marshal(cfg)
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *synth) check(t *testing.T, m *ir.Model) {
	t.Helper()
	if len(m.Tensors) != len(s.want) {
		t.Fatalf("%d tensors, want %d", len(m.Tensors), len(s.want))
	}
	for _, tn := range m.Tensors {
		w, ok := s.want[tn.Name]
		if !ok {
			t.Errorf("unexpected tensor %s", tn.Name)
			continue
		}
		if tn.DType != ir.BF16 || !reflect.DeepEqual(tn.Shape, w.shape) {
			t.Errorf("%s: %s %v, want BF16 %v", tn.Name, tn.DType, tn.Shape, w.shape)
			continue
		}
		if got := readAll(t, tn); !bytes.Equal(got, w.data) {
			t.Errorf("%s: bytes differ", tn.Name)
		}
		tn.Release()
	}
	if m.Config.NormOffset != 1 || m.Config.Family != s.family || m.Config.Vocab != s.vocab {
		t.Errorf("config %+v", m.Config)
	}
}

// --- flax msgpack writer -------------------------------------------------

func mpStr(b []byte, s string) []byte {
	switch {
	case len(s) < 32:
		b = append(b, 0xa0|byte(len(s)))
	case len(s) < 256:
		b = append(b, 0xd9, byte(len(s)))
	default:
		b = append(b, 0xda, byte(len(s)>>8), byte(len(s)))
	}
	return append(b, s...)
}

func mpMap(b []byte, n int) []byte {
	if n < 16 {
		return append(b, 0x80|byte(n))
	}
	return append(b, 0xde, byte(n>>8), byte(n))
}

func mpArray(b []byte, shape []int64, data []byte) []byte {
	var p []byte
	p = append(p, 0x93, 0x90|byte(len(shape)))
	for _, d := range shape {
		p = append(p, 0xcd, byte(d>>8), byte(d))
	}
	p = mpStr(p, "bfloat16")
	p = append(p, 0xc6)
	p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
	p = append(p, data...)
	b = append(b, 0xc9)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = append(b, 1)
	return append(b, p...)
}

// writeMsgpack writes the tree nested by "/" path components, as
// flax.serialization.to_bytes does for the google-deepmind tree.
func (s *synth) writeMsgpack(t *testing.T, path string) {
	t.Helper()
	type node struct {
		keys []string
		kids map[string]*node
		leaf *synthLeaf
	}
	root := &node{kids: map[string]*node{}}
	for i := range s.leaves {
		l := &s.leaves[i]
		parts := append(strings.Split(l.keyPath[0], "/"), l.keyPath[1])
		cur := root
		for j, p := range parts {
			next, ok := cur.kids[p]
			if !ok {
				next = &node{kids: map[string]*node{}}
				cur.kids[p] = next
				cur.keys = append(cur.keys, p)
			}
			if j == len(parts)-1 {
				next.leaf = l
			}
			cur = next
		}
	}
	var enc func(b []byte, n *node) []byte
	enc = func(b []byte, n *node) []byte {
		if n.leaf != nil {
			return mpArray(b, n.leaf.shape, n.leaf.data)
		}
		b = mpMap(b, len(n.keys))
		for _, k := range n.keys {
			b = mpStr(b, k)
			b = enc(b, n.kids[k])
		}
		return b
	}
	if err := os.WriteFile(path, enc(nil, root), 0o644); err != nil {
		t.Fatal(err)
	}
}

// --- Orbax (per-array zarr directories) writer ---------------------------

// chunkBytes returns the stored bytes of the chunk at grid position cidx
// (chunk shape cs) of a bf16 leaf, in C or Fortran order, edge chunks
// padded with zeros.
func chunkBytes(shape, cs, cidx []int64, data []byte, fortran bool) []byte {
	r := len(shape)
	n := int64(1)
	for _, c := range cs {
		n *= c
	}
	out := make([]byte, 0, 2*n)
	st := make([]int64, r)
	g := make([]int64, r)
	for k := int64(0); k < n; k++ {
		rem := k
		for i := r - 1; i >= 0; i-- {
			d := i
			if fortran {
				d = r - 1 - i
			}
			st[d] = rem % cs[d]
			rem /= cs[d]
		}
		in := true
		flat := int64(0)
		for d := 0; d < r; d++ {
			g[d] = cidx[d]*cs[d] + st[d]
			if g[d] >= shape[d] {
				in = false
			}
			flat = flat*shape[d] + g[d]
		}
		if in {
			out = append(out, data[2*flat:2*flat+2]...)
		} else {
			out = append(out, 0, 0)
		}
	}
	return out
}

var zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

func zstdBytes(b []byte) []byte { return zstdEnc.EncodeAll(b, nil) }

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func js(v []int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func gridOf(shape, cs []int64, fn func([]int64)) {
	r := len(shape)
	g := make([]int64, r)
	total := int64(1)
	for d := range shape {
		g[d] = (shape[d] + cs[d] - 1) / cs[d]
		total *= g[d]
	}
	for k := int64(0); k < total; k++ {
		idx := make([]int64, r)
		rem := k
		for d := r - 1; d >= 0; d-- {
			idx[d] = rem % g[d]
			rem /= g[d]
		}
		fn(idx)
	}
}

func key(idx []int64, sep string) string {
	var s []string
	for _, i := range idx {
		s = append(s, fmt.Sprint(i))
	}
	return strings.Join(s, sep)
}

// writeOrbax writes the tree as Orbax's non-OCDBT layout: one zarr array
// directory per leaf, named by the leaf's parameter name (key path joined
// with "."), with _METADATA unless metadata is false. zarr3 selects v3
// arrays with the sharding_indexed codec Orbax uses; otherwise leaves cycle
// through raw, zstd row-chunked and gzip Fortran-order v2 arrays.
func (s *synth) writeOrbax(t *testing.T, dir string, zarr3, metadata bool) {
	t.Helper()
	tree := map[string]any{}
	var order []string
	write := func(p string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, l := range s.leaves {
		name := strings.Join(l.keyPath, ".")
		adir := filepath.Join(dir, filepath.FromSlash(name))
		var km []map[string]any
		for _, k := range l.keyPath {
			km = append(km, map[string]any{"key": k, "key_type": 2})
		}
		tk := fmt.Sprintf("(%q, %q)", l.keyPath[0], l.keyPath[1])
		tree[tk] = map[string]any{"key_metadata": km, "value_metadata": map[string]any{"value_type": "jax.Array", "skip_deserialize": false, "write_shape": l.shape}}
		order = append(order, tk)
		if zarr3 {
			inner := append([]int64(nil), l.shape...)
			if inner[0]%2 == 0 {
				inner[0] /= 2
			}
			meta := fmt.Sprintf(`{"zarr_format":3,"node_type":"array","shape":%s,"data_type":"bfloat16",
				"chunk_grid":{"name":"regular","configuration":{"chunk_shape":%s}},"chunk_key_encoding":{"name":"default"},"fill_value":0,
				"codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":%s,
				"codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}}],
				"index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}],"index_location":"end"}}]}`,
				js(l.shape), js(l.shape), js(inner))
			write(filepath.Join(adir, "zarr.json"), []byte(meta))
			var body, index []byte
			gridOf(l.shape, inner, func(idx []int64) {
				enc := zstdBytes(chunkBytes(l.shape, inner, idx, l.data, false))
				index = binary.LittleEndian.AppendUint64(index, uint64(len(body)))
				index = binary.LittleEndian.AppendUint64(index, uint64(len(enc)))
				body = append(body, enc...)
			})
			index = binary.LittleEndian.AppendUint32(index, crc32.Checksum(index, crc32.MakeTable(crc32.Castagnoli)))
			zero := make([]int64, len(l.shape))
			write(filepath.Join(adir, "c", key(zero, "/")), append(body, index...))
			continue
		}
		cs := append([]int64(nil), l.shape...)
		order, comp := "C", "null"
		enc := func(b []byte) []byte { return b }
		switch i % 3 {
		case 1:
			cs[0] = (cs[0] + 2) / 3 // row chunks with a padded edge chunk
			comp, enc = `{"id":"zstd","level":1}`, zstdBytes
		case 2:
			cs[len(cs)-1] = (cs[len(cs)-1] + 1) / 2
			order, comp, enc = "F", `{"id":"gzip","level":1}`, gzipBytes
		}
		meta := fmt.Sprintf(`{"chunks":%s,"compressor":%s,"dimension_separator":".","dtype":"bfloat16","fill_value":null,"filters":null,"order":%q,"shape":%s,"zarr_format":2}`,
			js(cs), comp, order, js(l.shape))
		write(filepath.Join(adir, ".zarray"), []byte(meta))
		gridOf(l.shape, cs, func(idx []int64) {
			write(filepath.Join(adir, key(idx, ".")), enc(chunkBytes(l.shape, cs, idx, l.data, order == "F")))
		})
	}
	if !metadata {
		return
	}
	// Keep the tree's order in the JSON object.
	var b strings.Builder
	b.WriteString(`{"tree_metadata": {`)
	for i, k := range order {
		v, _ := json.Marshal(tree[k])
		kj, _ := json.Marshal(k)
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %s", kj, v)
	}
	fmt.Fprintf(&b, `}, "use_ocdbt": false, "use_zarr3": %v, "store_array_data_equal_to_fill_value": true, "custom_metadata": null}`, zarr3)
	write(filepath.Join(dir, "_METADATA"), []byte(b.String()))
	write(filepath.Join(dir, "_CHECKPOINT_METADATA"), []byte(`{"item_handlers": "orbax.checkpoint._src.handlers.standard_checkpoint_handler.StandardCheckpointHandler"}`))
}

func TestSynthetic(t *testing.T) {
	cases := []struct {
		name     string
		family   ir.Family
		fused    bool
		gatingFD bool
		d, f     int
	}{
		{"gemma1-fused-square", ir.Gemma1, true, false, 16, 16},
		{"gemma2-mqa", ir.Gemma2, false, false, 16, 40},
		{"gemma3-fd", ir.Gemma3, false, true, 24, 40},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSynth(c.family, c.fused, c.gatingFD, c.d, c.f)
			dir := t.TempDir()
			cfg := s.hfConfig(t, dir)
			opts := ir.OpenOptions{ConfigPath: cfg, TokenizerPath: goldenTokenizer}

			mp := filepath.Join(dir, "params.msgpack")
			s.writeMsgpack(t, mp)
			layouts := map[string]string{"flax": mp}
			for _, v := range []struct {
				name          string
				zarr3, noMeta bool
			}{{"orbax-zarr2", false, false}, {"orbax-zarr3", true, false}, {"orbax-discovered", false, true}} {
				p := filepath.Join(dir, v.name)
				s.writeOrbax(t, p, v.zarr3, !v.noMeta)
				layouts[v.name] = p
			}
			for name, p := range layouts {
				m, err := ir.Open(p, opts)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				wantFormat := FlaxFormat
				if strings.HasPrefix(name, "orbax") {
					wantFormat = OrbaxFormat
				}
				if m.Provenance.Format != wantFormat {
					t.Errorf("%s: format %s", name, m.Provenance.Format)
				}
				s.check(t, m)
				notes := strings.Join(m.Provenance.Notes, "\n")
				if (s.pad > 0) != strings.Contains(notes, "dropped 128 padding rows") {
					t.Errorf("%s: notes %q", name, m.Provenance.Notes)
				}
				if c.d == c.f && !strings.Contains(notes, "ffn = width") {
					t.Errorf("%s: square gating not noted: %q", name, m.Provenance.Notes)
				}
				m.Close()
			}
		})
	}
}

// TestSmallBands re-reads a model with tiny band and strip budgets so that
// every transposed tensor spans many bands and strips.
func TestSmallBands(t *testing.T) {
	ob, os_ := bandBytes, stripBytes
	bandBytes, stripBytes = 40, 24
	defer func() { bandBytes, stripBytes = ob, os_ }()
	s := newSynth(ir.Gemma2, false, false, 16, 40)
	dir := t.TempDir()
	mp := filepath.Join(dir, "params.msgpack")
	s.writeMsgpack(t, mp)
	m, err := OpenFlax(mp, ir.OpenOptions{ConfigPath: s.hfConfig(t, dir), TokenizerPath: goldenTokenizer})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s.check(t, m)
}

func TestConfigInference(t *testing.T) {
	s := newSynth(ir.Gemma2, false, false, 16, 40)
	dir := t.TempDir()
	mp := filepath.Join(dir, "params.msgpack")
	s.writeMsgpack(t, mp)
	// No config and not a released size: an error that says what is missing.
	_, err := OpenFlax(mp, ir.OpenOptions{TokenizerPath: goldenTokenizer})
	if err == nil || !strings.Contains(err.Error(), "not a released Gemma size") {
		t.Fatalf("got %v", err)
	}
	// Naming the family accepts its defaults, with a note.
	m, err := OpenFlax(mp, ir.OpenOptions{TokenizerPath: goldenTokenizer, Arch: ir.Gemma2})
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.SlidingWindow != 4096 || m.Config.AttnSoftcap != 50 || m.Config.Vocab != 4096 || !strings.Contains(strings.Join(m.Provenance.Notes, "\n"), "family defaults") {
		t.Errorf("config %+v notes %q", m.Config, m.Provenance.Notes)
	}
	s.check(t, m)
	m.Close()
	// The wrong family is refused.
	if _, err := OpenFlax(mp, ir.OpenOptions{TokenizerPath: goldenTokenizer, Arch: ir.Gemma3}); err == nil || !strings.Contains(err.Error(), "gemma3 was requested") {
		t.Errorf("got %v", err)
	}
	// A config that disagrees with the shapes is refused.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"model_type":"gemma2","vocab_size":4096,"hidden_size":16,"intermediate_size":41,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":8}`), 0o644)
	if _, err := OpenFlax(mp, ir.OpenOptions{ConfigPath: bad, TokenizerPath: goldenTokenizer}); err == nil || !strings.Contains(err.Error(), "feed-forward size = 41") {
		t.Errorf("got %v", err)
	}
	// A config and tokenizer beside the file are found.
	os.WriteFile(filepath.Join(dir, "config.json"), mustRead(t, s.hfConfig(t, t.TempDir())), 0o644)
	os.WriteFile(filepath.Join(dir, "tokenizer.model"), mustRead(t, goldenTokenizer), 0o644)
	m, err = ir.Open(mp, ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReleasedSizes: the release table resolves to valid configs, with
// the values the shapes cannot tell.
func TestReleasedSizes(t *testing.T) {
	for _, r := range releases {
		g := dims{family: r.family, layers: r.layers, d: r.d, n: r.n, k: r.k, h: r.h, f: r.f}
		c, note, err := configFromDims(g, r.vocab, "")
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if !strings.Contains(note, r.name) || c.Vocab != r.vocab {
			t.Errorf("%s: note %q vocab %d", r.name, note, c.Vocab)
		}
		switch r.name {
		case "Gemma 2 27B":
			if c.QueryPreAttnScalar != 144 || c.FinalSoftcap != 30 {
				t.Errorf("%s: %+v", r.name, c)
			}
		case "Gemma 3 1B":
			if c.SlidingWindow != 512 || c.RopeScale != 1 || c.RopeBaseLocal != 10000 || c.RopeBase != 1e6 || c.ContextLength != 32768 {
				t.Errorf("%s: %+v", r.name, c)
			}
		case "Gemma 3 27B":
			if c.QueryPreAttnScalar != 168 || c.RopeScale != 8 || c.SlidingWindow != 1024 || !c.Sliding[0] || c.Sliding[5] {
				t.Errorf("%s: %+v", r.name, c)
			}
		case "Gemma 7B":
			if c.QueryPreAttnScalar != 256 || c.SlidingWindow != 0 {
				t.Errorf("%s: %+v", r.name, c)
			}
		}
	}
}

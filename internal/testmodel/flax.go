package testmodel

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Memory bounds of transposeSource: the output it computes at once (a
// band) and the input it reads at once (a strip). Variables so that tests
// can shrink them.
var (
	transposeBandBytes  int64 = 8 << 20
	transposeStripBytes int64 = 1 << 20
)

// flaxMaxChunk is flax.serialization's MAX_CHUNK_SIZE: arrays of more
// bytes are written as chunked arrays. A variable so that tests can
// shrink it.
var flaxMaxChunk int64 = 1 << 30

// transposeSource presents batch row-major rows×cols matrices of src,
// stored back to back, as their transposes (batch cols×rows matrices):
// output row b*cols+c is column c of matrix b. It computes a band of
// output rows at a time from strips of input rows. When a matrix is
// larger than a band, src is first copied to a scratch file in spillDir
// (deleted by Close), so that each random value is generated once and
// the bands are cut from the page cache rather than regenerated.
type transposeSource struct {
	src               sizedSource
	batch, rows, cols int64
	es                int64
	spillDir          string

	in            io.ReaderAt
	spill         *os.File
	band, strip   []byte
	bandB, c0, c1 int64
}

func newTranspose(src sizedSource, es, batch, rows, cols int64, spillDir string) *transposeSource {
	return &transposeSource{src: src, batch: batch, rows: rows, cols: cols, es: es, spillDir: spillDir, in: src, bandB: -1}
}

// Size is the byte size (that of the input).
func (t *transposeSource) Size() int64 { return t.batch * t.rows * t.cols * t.es }

// ReadAt implements io.ReaderAt over the transposed bytes.
func (t *transposeSource) ReadAt(p []byte, off int64) (int, error) {
	size := t.Size()
	if off < 0 {
		return 0, fmt.Errorf("testmodel: negative offset %d", off)
	}
	rowBytes := t.rows * t.es
	done := 0
	for done < len(p) && off < size {
		r := off / rowBytes
		b, c := r/t.cols, r%t.cols
		if err := t.fill(b, c); err != nil {
			return done, err
		}
		n := copy(p[done:], t.band[off-(b*t.cols+t.c0)*rowBytes:])
		done += n
		off += int64(n)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// fill makes the band holding output row c of matrix b current.
func (t *transposeSource) fill(b, c int64) error {
	if b == t.bandB && c >= t.c0 && c < t.c1 {
		return nil
	}
	rowBytes := t.rows * t.es
	bandRows := max(1, transposeBandBytes/rowBytes)
	if bandRows < t.cols && t.spill == nil && t.spillDir != "" {
		f, err := os.CreateTemp(t.spillDir, ".testmodel-spill-*")
		if err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		os.Remove(f.Name()) // unlinked: space is freed when closed, even on a crash
		t.spill = f
		w := bufio.NewWriterSize(f, 1<<20)
		if err := copySource(w, t.src, 0, t.src.Size(), make([]byte, copyBuf)); err != nil {
			return fmt.Errorf("testmodel: spilling a transpose: %w", err)
		}
		if err := w.Flush(); err != nil {
			return fmt.Errorf("testmodel: spilling a transpose: %w", err)
		}
		t.in = f
	}
	c0 := c / bandRows * bandRows
	c1 := min(c0+bandRows, t.cols)
	if need := (c1 - c0) * rowBytes; int64(cap(t.band)) < need {
		t.band = make([]byte, need)
	}
	t.band = t.band[:(c1-c0)*rowBytes]
	inRow := t.cols * t.es
	stripRows := min(t.rows, max(1, transposeStripBytes/inRow))
	if int64(cap(t.strip)) < stripRows*inRow {
		t.strip = make([]byte, stripRows*inRow)
	}
	t.bandB = -1
	for i0 := int64(0); i0 < t.rows; i0 += stripRows {
		i1 := min(i0+stripRows, t.rows)
		s := t.strip[:(i1-i0)*inRow]
		at := (b*t.rows + i0) * inRow
		if n, err := t.in.ReadAt(s, at); n < len(s) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("testmodel: transposing: reading byte %d: %w", at, err)
		}
		// Blocks of 32 input rows keep the strided reads within a few
		// cache lines while each output row gets a contiguous run.
		es := t.es
		for ib := i0; ib < i1; ib += 32 {
			ie := min(ib+32, i1)
			for cc := c0; cc < c1; cc++ {
				d := ((cc-c0)*t.rows + ib) * es
				for i := ib; i < ie; i++ {
					o := (i-i0)*inRow + cc*es
					copy(t.band[d:d+es], s[o:o+es])
					d += es
				}
			}
		}
	}
	t.bandB, t.c0, t.c1 = b, c0, c1
	return nil
}

// Close drops the buffers and the scratch file.
func (t *transposeSource) Close() error {
	t.band, t.strip, t.bandB = nil, nil, -1
	if t.spill != nil {
		err := t.spill.Close()
		t.spill, t.in = nil, t.src
		return err
	}
	return nil
}

// jaxLeaf is one array of the google-deepmind/gemma parameter tree.
type jaxLeaf struct {
	path    []string // nested dict keys: transformer, layer_0, attn, q_einsum, w
	shape   []int64
	src     sizedSource
	closers []io.Closer
}

func (l *jaxLeaf) close() error {
	var first error
	for _, c := range l.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// jaxLeaves lays the weights of tensors out as google-deepmind/gemma's
// parameter tree, in the einsum layouts the JAX reader transposes back
// (docs/formats-jax.md): q_einsum [N,D,H] (qkv_einsum [3,N,D,H] when
// every head has its own key/value head), kv_einsum [2,K,D,H],
// attn_vec_einsum [N,H,D], gating_einsum [2,D,F] ([2,F,D] for Gemma 3),
// linear [F,D]. Transposed leaves spill to scratch files in spillDir.
func jaxLeaves(cfg ir.Config, tensors []*ir.Tensor, spillDir string) ([]*jaxLeaf, error) {
	byName := map[string]*ir.Tensor{}
	for _, t := range tensors {
		byName[t.Name] = t
	}
	if byName["output.weight"] != nil {
		return nil, fmt.Errorf("testmodel: JAX Gemma checkpoints tie the output to the embedding; the config has untied embeddings")
	}
	var missing error
	src := func(name string) sizedSource {
		t := byName[name]
		if t == nil {
			missing = fmt.Errorf("testmodel: no tensor %s", name)
			return concatSource{}
		}
		return t.Source.(sizedSource)
	}
	es := int64(tensors[0].DType.TypeSize())
	N, K, H := int64(cfg.NumHeads), int64(cfg.NumKVHeads), int64(cfg.HeadDim)
	D, F, V := int64(cfg.Hidden), int64(cfg.FFN), int64(cfg.Vocab)
	var leaves []*jaxLeaf
	leaf := func(shape []int64, s sizedSource, path ...string) *jaxLeaf {
		l := &jaxLeaf{path: append([]string{"transformer"}, path...), shape: shape, src: s}
		leaves = append(leaves, l)
		return l
	}
	// tr transposes batch rows×cols matrices of a tensor (or of several
	// tensors back to back) and registers the scratch for closing.
	var pending []io.Closer
	tr := func(s sizedSource, batch, rows, cols int64) sizedSource {
		t := newTranspose(s, es, batch, rows, cols, spillDir)
		pending = append(pending, t)
		return t
	}
	done := func(l *jaxLeaf) { l.closers, pending = pending, nil }

	leaf([]int64{V, D}, src("token_embd.weight"), "embedder", "input_embedding")
	leaf([]int64{D}, src("output_norm.weight"), "final_norm", "scale")
	for i := 0; i < cfg.NumLayers; i++ {
		ln := "layer_" + strconv.Itoa(i)
		bn := fmt.Sprintf("blk.%d.", i)
		// attn_output [D, N·H] is the transpose of attn_vec_einsum [N·H, D].
		done(leaf([]int64{N, H, D}, tr(src(bn+"attn_output.weight"), 1, D, N*H), ln, "attn", "attn_vec_einsum", "w"))
		// attn_q [N·H, D] holds N matrices [H, D]: q_einsum[n] = their transposes.
		if K == N {
			done(leaf([]int64{3, N, D, H}, concatSource{
				tr(src(bn+"attn_q.weight"), N, H, D), tr(src(bn+"attn_k.weight"), N, H, D), tr(src(bn+"attn_v.weight"), N, H, D),
			}, ln, "attn", "qkv_einsum", "w"))
		} else {
			done(leaf([]int64{N, D, H}, tr(src(bn+"attn_q.weight"), N, H, D), ln, "attn", "q_einsum", "w"))
			done(leaf([]int64{2, K, D, H}, concatSource{
				tr(src(bn+"attn_k.weight"), K, H, D), tr(src(bn+"attn_v.weight"), K, H, D),
			}, ln, "attn", "kv_einsum", "w"))
		}
		if cfg.QKNorm {
			leaf([]int64{H}, src(bn+"attn_q_norm.weight"), ln, "attn", "_query_norm", "scale")
			leaf([]int64{H}, src(bn+"attn_k_norm.weight"), ln, "attn", "_key_norm", "scale")
		}
		if cfg.Family == ir.Gemma3 {
			leaf([]int64{2, F, D}, concatSource{src(bn + "ffn_gate.weight"), src(bn + "ffn_up.weight")}, ln, "mlp", "gating_einsum")
		} else {
			done(leaf([]int64{2, D, F}, concatSource{
				tr(src(bn+"ffn_gate.weight"), 1, F, D), tr(src(bn+"ffn_up.weight"), 1, F, D),
			}, ln, "mlp", "gating_einsum"))
		}
		done(leaf([]int64{F, D}, tr(src(bn+"ffn_down.weight"), 1, D, F), ln, "mlp", "linear"))
		leaf([]int64{D}, src(bn+"attn_norm.weight"), ln, "pre_attention_norm", "scale")
		if cfg.PostNorms {
			leaf([]int64{D}, src(bn+"post_attention_norm.weight"), ln, "post_attention_norm", "scale")
		}
		leaf([]int64{D}, src(bn+"ffn_norm.weight"), ln, "pre_ffw_norm", "scale")
		if cfg.PostNorms {
			leaf([]int64{D}, src(bn+"post_ffw_norm.weight"), ln, "post_ffw_norm", "scale")
		}
	}
	if missing != nil {
		return nil, missing
	}
	var total int64
	for _, l := range leaves {
		n := es
		for _, d := range l.shape {
			n *= d
		}
		if n != l.src.Size() {
			return nil, fmt.Errorf("testmodel: JAX leaf %v: shape %v needs %d bytes, the weights have %d", l.path, l.shape, n, l.src.Size())
		}
		total += n
	}
	var want int64
	for _, t := range tensors {
		want += t.Source.(sizedSource).Size()
	}
	if total != want {
		return nil, fmt.Errorf("testmodel: the JAX tree holds %d bytes of the %d of weights", total, want)
	}
	return leaves, nil
}

// numpyName is NumPy's name of a weight type.
func numpyName(dt ir.DType) string {
	return map[ir.DType]string{ir.F32: "float32", ir.F16: "float16", ir.BF16: "bfloat16"}[dt]
}

// WriteFlaxMsgpack writes the weights of (cfg, seed, dtype) — the values
// WriteHF writes — as google-deepmind/gemma's parameter tree serialized
// with flax.serialization.to_bytes: nested msgpack maps
// {transformer: {embedder: {input_embedding}, final_norm: {scale},
// layer_N: {attn: {...}, mlp: {...}, pre_attention_norm: {scale}, ...}}},
// each array an extension of type 1 holding the msgpack triple (shape,
// dtype name, C-order bytes), arrays above 1 GiB split into flax's
// chunked form. Einsum weights are stored in the JAX layouts, so the
// reader's transposes give back WriteHF's tensors. Lengths are computed
// first and the weights then streamed: memory stays at a few megabytes
// (transposed leaves use a scratch file beside path). No config or
// tokenizer is written: see WriteHFConfig.
func WriteFlaxMsgpack(path string, cfg ir.Config, seed int64, dtype ir.DType) (err error) {
	tensors, err := Tensors(cfg, seed, dtype)
	if err != nil {
		return err
	}
	leaves, err := jaxLeaves(cfg, tensors, filepath.Dir(path))
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range leaves {
			l.close()
		}
	}()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("testmodel: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	mw := &mpWriter{w: w, buf: make([]byte, copyBuf), es: int64(dtype.TypeSize()), dtype: numpyName(dtype)}

	// The tree: nested maps in first-use order.
	type node struct {
		keys []string
		kids map[string]*node
		leaf *jaxLeaf
	}
	root := &node{kids: map[string]*node{}}
	for _, l := range leaves {
		cur := root
		for j, k := range l.path {
			next := cur.kids[k]
			if next == nil {
				next = &node{kids: map[string]*node{}}
				cur.kids[k] = next
				cur.keys = append(cur.keys, k)
			}
			if j == len(l.path)-1 {
				next.leaf = l
			}
			cur = next
		}
	}
	var enc func(n *node) error
	enc = func(n *node) error {
		if n.leaf != nil {
			err := mw.array(n.leaf.shape, n.leaf.src)
			// Free the leaf's scratch as soon as it is written.
			if cerr := n.leaf.close(); err == nil {
				err = cerr
			}
			return err
		}
		mw.mapHeader(len(n.keys))
		for _, k := range n.keys {
			mw.str(k)
			if err := enc(n.kids[k]); err != nil {
				return fmt.Errorf("%s/%w", k, err)
			}
		}
		return nil
	}
	if err := enc(root); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	if mw.err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, mw.err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	return nil
}

// mpWriter writes msgpack as msgpack-python packs it (use_bin_type=True,
// the shortest form of every integer, string, map and extension header).
type mpWriter struct {
	w     *bufio.Writer
	err   error
	buf   []byte
	es    int64
	dtype string
}

func (m *mpWriter) raw(b []byte) {
	if m.err == nil {
		_, m.err = m.w.Write(b)
	}
}

// appendHeader appends a header of the shortest of: a fix form
// (fixBase|n for n <= fixMax, if fixMax >= 0), or codes[i] followed by n
// in 1, 2 or 4 big-endian bytes.
func appendHeader(b []byte, n int64, fixBase byte, fixMax int64, c8, c16, c32 byte) []byte {
	switch {
	case n <= fixMax:
		return append(b, fixBase|byte(n))
	case n <= 0xff && c8 != 0:
		return append(b, c8, byte(n))
	case n <= 0xffff:
		return append(b, c16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, c32), uint32(n))
}

func appendUint(b []byte, v int64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= 0xff:
		return append(b, 0xcc, byte(v))
	case v <= 0xffff:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), uint64(v))
}

func appendStr(b []byte, s string) []byte {
	return append(appendHeader(b, int64(len(s)), 0xa0, 31, 0xd9, 0xda, 0xdb), s...)
}

func (m *mpWriter) mapHeader(n int) { m.raw(appendHeader(nil, int64(n), 0x80, 15, 0, 0xde, 0xdf)) }

func (m *mpWriter) str(s string) { m.raw(appendStr(nil, s)) }

// ndarray writes an ext-1 ndarray of the n bytes of src from byte off.
func (m *mpWriter) ndarray(shape []int64, src io.ReaderAt, off, n int64) {
	p := appendHeader(nil, 3, 0x90, 15, 0, 0xdc, 0xdd)
	p = appendHeader(p, int64(len(shape)), 0x90, 15, 0, 0xdc, 0xdd)
	for _, d := range shape {
		p = appendUint(p, d)
	}
	p = appendStr(p, m.dtype)
	p = appendHeader(p, n, 0, -1, 0xc4, 0xc5, 0xc6)
	l := int64(len(p)) + n
	var h []byte
	switch l {
	case 1, 2, 4, 8, 16:
		h = []byte{map[int64]byte{1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}[l]}
	default:
		h = appendHeader(nil, l, 0, -1, 0xc7, 0xc8, 0xc9)
	}
	m.raw(append(append(h, 1), p...))
	if m.err == nil {
		m.err = copySource(m.w, src, off, n, m.buf)
	}
}

// array writes a leaf: one ndarray, or flax's chunked form when it is
// larger than flaxMaxChunk bytes — {"__msgpack_chunked_array__": true,
// "shape": {"0": d0, ...}, "chunks": {"0": 1-D ndarray, ...}} over the
// flattened array.
func (m *mpWriter) array(shape []int64, src sizedSource) error {
	size := src.Size()
	if size <= flaxMaxChunk {
		m.ndarray(shape, src, 0, size)
		return m.err
	}
	m.mapHeader(3)
	m.str("__msgpack_chunked_array__")
	m.raw([]byte{0xc3})
	m.str("shape")
	m.mapHeader(len(shape))
	for i, d := range shape {
		m.str(strconv.Itoa(i))
		m.raw(appendUint(nil, d))
	}
	m.str("chunks")
	chunk := max(1, flaxMaxChunk/m.es) * m.es
	n := (size + chunk - 1) / chunk
	m.mapHeader(int(n))
	for i := int64(0); i < n; i++ {
		m.str(strconv.FormatInt(i, 10))
		k := min(chunk, size-i*chunk)
		m.ndarray([]int64{k / m.es}, src, i*chunk, k)
	}
	return m.err
}

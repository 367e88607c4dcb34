package testmodel

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

// copyBuf is the piece size in which generators stream weights: the most
// weight bytes a generator holds at once (transposes aside, see flax.go).
const copyBuf = 4 << 20

// sizedSource is a lazy byte array of known size.
type sizedSource interface {
	io.ReaderAt
	Size() int64
}

// concatSource presents its parts back to back.
type concatSource []sizedSource

// Size is the total byte size.
func (c concatSource) Size() int64 {
	var n int64
	for _, p := range c {
		n += p.Size()
	}
	return n
}

// ReadAt reads across part boundaries.
func (c concatSource) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("testmodel: negative offset %d", off)
	}
	done := 0
	base := int64(0)
	for _, part := range c {
		if done == len(p) {
			break
		}
		sz := part.Size()
		if off < base+sz {
			k := min(int64(len(p)-done), base+sz-off)
			n, err := part.ReadAt(p[done:done+int(k)], off-base)
			done += n
			off += int64(n)
			if int64(n) < k {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return done, err
			}
		}
		base += sz
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// copySource writes the n bytes of src from byte off to w, copyBuf at a time.
func copySource(w io.Writer, src io.ReaderAt, off, n int64, buf []byte) error {
	for n > 0 {
		k := min(n, int64(len(buf)))
		if got, err := src.ReadAt(buf[:k], off); int64(got) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// torchEntry is one tensor of a gemma_pytorch state dict.
type torchEntry struct {
	name  string
	shape []int64
	src   sizedSource
}

// gemmaPyTorchEntries lists the state dict gemma_pytorch's
// GemmaForCausalLM.state_dict() holds for the tensors, in its order: the
// embedder, then per layer the fused qkv_proj (q, k, v rows), o_proj,
// query/key norms, the MLP and the layer norms, then model.norm.
func gemmaPyTorchEntries(cfg ir.Config, tensors []*ir.Tensor) ([]torchEntry, error) {
	byName := map[string]*ir.Tensor{}
	for _, t := range tensors {
		byName[t.Name] = t
	}
	src := func(name string) sizedSource { return byName[name].Source.(sizedSource) }
	var out []torchEntry
	add := func(canonical, name string) error {
		t := byName[canonical]
		if t == nil {
			return fmt.Errorf("testmodel: no tensor %s", canonical)
		}
		out = append(out, torchEntry{name, t.Shape, src(canonical)})
		return nil
	}
	if _, ok := byName["output.weight"]; ok {
		return nil, fmt.Errorf("testmodel: gemma_pytorch checkpoints tie the output to the embedding; the config has untied embeddings")
	}
	if err := add("token_embd.weight", "embedder.weight"); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.NumLayers; i++ {
		bn := fmt.Sprintf("blk.%d.", i)
		lp := fmt.Sprintf("model.layers.%d.", i)
		q, k, v := byName[bn+"attn_q.weight"], byName[bn+"attn_k.weight"], byName[bn+"attn_v.weight"]
		if q == nil || k == nil || v == nil {
			return nil, fmt.Errorf("testmodel: layer %d lacks attention weights", i)
		}
		out = append(out, torchEntry{lp + "self_attn.qkv_proj.weight", []int64{q.Shape[0] + k.Shape[0] + v.Shape[0], q.Shape[1]},
			concatSource{src(q.Name), src(k.Name), src(v.Name)}})
		order := []string{"attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
			"attn_norm.weight", "ffn_norm.weight", "post_attention_norm.weight", "post_ffw_norm.weight"}
		if cfg.Family != ir.Gemma1 {
			// Gemma 2/3 layers: input, post-attention, pre- and post-FFW norms.
			order[7], order[8] = order[8], order[7]
		}
		for _, suffix := range order {
			if byName[bn+suffix] == nil {
				continue
			}
			hf, err := safetensors.HFName(bn+suffix, cfg.Family)
			if err != nil {
				return nil, fmt.Errorf("testmodel: %w", err)
			}
			hf = strings.Replace(hf, ".self_attn.q_norm.", ".self_attn.query_norm.", 1)
			hf = strings.Replace(hf, ".self_attn.k_norm.", ".self_attn.key_norm.", 1)
			if err := add(bn+suffix, hf); err != nil {
				return nil, err
			}
		}
	}
	if err := add("output_norm.weight", "model.norm.weight"); err != nil {
		return nil, err
	}
	if len(out) != len(tensors)-2*cfg.NumLayers {
		return nil, fmt.Errorf("testmodel: %d state dict entries for %d tensors", len(out), len(tensors))
	}
	return out, nil
}

// WritePyTorchCkpt writes the weights of (cfg, seed, dtype) — the values
// WriteHF writes — as a gemma_pytorch checkpoint: torch.save of
// {'model_state_dict': GemmaForCausalLM.state_dict()} in torch's zip
// layout, named as gemma_pytorch names them (embedder.weight, fused
// self_attn.qkv_proj.weight, ...). The archive holds <stem>/data.pkl (a
// protocol 2 pickle of the dict, tensors as _rebuild_tensor_v2 of
// persistent storage references), <stem>/.format_version,
// <stem>/byteorder, one stored (uncompressed) entry <stem>/data/N per
// tensor with its data 64-byte aligned, <stem>/version and
// <stem>/.data/serialization_id, as torch.save writes them. Weights are
// generated while the file is written; memory stays at a few megabytes.
// No config or tokenizer is written: see WriteHFConfig.
func WritePyTorchCkpt(path string, cfg ir.Config, seed int64, dtype ir.DType) (err error) {
	tensors, err := Tensors(cfg, seed, dtype)
	if err != nil {
		return err
	}
	entries, err := gemmaPyTorchEntries(cfg, tensors)
	if err != nil {
		return err
	}
	storage := map[ir.DType]string{ir.F32: "FloatStorage", ir.F16: "HalfStorage", ir.BF16: "BFloat16Storage"}[dtype]
	es := int64(dtype.TypeSize())
	pkl := torchStateDictPickle(entries, storage, es)

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
	cw := &countWriter{w: f}
	zw := zip.NewWriter(cw)
	// torch names the archive's top directory after the file's stem.
	stem := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if stem == "" || strings.ContainsAny(stem, "/\\") {
		stem = "archive"
	}
	buf := make([]byte, copyBuf)
	descriptor := int64(0) // the previous entry's data descriptor, not yet written
	write := func(name string, data io.ReaderAt, size int64) error {
		// Flush so that cw.n plus the pending data descriptor is the offset
		// of the next local header, then pad its extra field ("FB" + 'Z's,
		// as torch does) so that the data starts on a 64-byte boundary.
		if err := zw.Flush(); err != nil {
			return err
		}
		full := stem + "/" + name
		at := cw.n + descriptor + 30 + int64(len(full)) + 4
		descriptor = 16
		if size >= 0xffffffff {
			descriptor = 24 // zip64 sizes
		}
		pad := (64 - at%64) % 64
		extra := []byte{'F', 'B', byte(pad), byte(pad >> 8)}
		for range pad {
			extra = append(extra, 'Z')
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: full, Method: zip.Store, Extra: extra})
		if err != nil {
			return err
		}
		return copySource(w, data, 0, size, buf)
	}
	small := func(name, s string) error {
		return write(name, strings.NewReader(s), int64(len(s)))
	}
	if err := write("data.pkl", strings.NewReader(string(pkl)), int64(len(pkl))); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	if err := small(".format_version", "1"); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	if err := small("byteorder", "little"); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	for i, e := range entries {
		if err := write("data/"+strconv.Itoa(i), e.src, e.src.Size()); err != nil {
			return fmt.Errorf("testmodel: %s: %s: %w", path, e.name, err)
		}
	}
	if err := small("version", "3\n"); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	// torch writes a random serialization id; ours derives from the seed
	// so that output stays deterministic.
	if err := small(".data/serialization_id", fmt.Sprintf("%020d%020d", uint64(seed), uint64(len(entries)))); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	return nil
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// pickler emits pickle protocol 2 opcodes the way CPython's pickler does
// for a torch state dict: strings, tuples, globals and reduced objects are
// memoized (BINPUT/LONG_BINPUT) and repeats fetched (BINGET/LONG_BINGET).
type pickler struct {
	b    []byte
	memo map[string]int // key: "s:"+string or "g:"+module.name
	next int
}

func (p *pickler) op(b ...byte) { p.b = append(p.b, b...) }

// put memoizes the object just pushed.
func (p *pickler) put() int {
	i := p.next
	p.next++
	if i < 256 {
		p.op('q', byte(i))
	} else {
		p.op('r')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(i))
	}
	return i
}

func (p *pickler) get(i int) {
	if i < 256 {
		p.op('h', byte(i))
	} else {
		p.op('j')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(i))
	}
}

// str pushes a str (BINUNICODE), memoized by value as CPython does for
// the interned strings torch uses ('storage', 'cpu', 'version').
func (p *pickler) str(s string, memoByValue bool) {
	if i, ok := p.memo["s:"+s]; ok && memoByValue {
		p.get(i)
		return
	}
	p.op('X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	i := p.put()
	if memoByValue {
		p.memo["s:"+s] = i
	}
}

func (p *pickler) global(module, name string) {
	k := "g:" + module + "." + name
	if i, ok := p.memo[k]; ok {
		p.get(i)
		return
	}
	p.op('c')
	p.b = append(p.b, module+"\n"+name+"\n"...)
	p.memo[k] = p.put()
}

// int pushes a non-negative or negative integer with the shortest opcode.
func (p *pickler) int(v int64) {
	switch {
	case v >= 0 && v <= 0xff:
		p.op('K', byte(v))
	case v >= 0 && v <= 0xffff:
		p.op('M', byte(v), byte(v>>8))
	case v >= -1<<31 && v < 1<<31:
		p.op('J')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(int32(v)))
	default:
		// LONG1: little-endian two's complement, as few bytes as keep the sign.
		var le []byte
		for x := v; ; x >>= 8 {
			le = append(le, byte(x))
			if (x>>7 == 0 && x >= 0) || (x>>7 == -1 && x < 0) {
				break
			}
		}
		p.op(0x8a, byte(len(le)))
		p.b = append(p.b, le...)
	}
}

// intTuple pushes a tuple of ints (TUPLE1-3 when short, as CPython does).
func (p *pickler) intTuple(v []int64) {
	if len(v) == 0 {
		p.op(')')
		return
	}
	if len(v) > 3 {
		p.op('(')
	}
	for _, x := range v {
		p.int(x)
	}
	switch len(v) {
	case 1:
		p.op(0x85)
	case 2:
		p.op(0x86)
	case 3:
		p.op(0x87)
	default:
		p.op('t')
	}
	p.put()
}

// emptyOrderedDict pushes collections.OrderedDict().
func (p *pickler) emptyOrderedDict() {
	p.global("collections", "OrderedDict")
	p.op(')', 'R')
	p.put()
}

// setItems emits the pending key/value pairs of the dict on the stack in
// CPython's batches of 1000 (SETITEM for a batch of one).
func (p *pickler) setItems(n int, item func(i int)) {
	for i := 0; i < n; i += 1000 {
		k := min(n-i, 1000)
		if k == 1 {
			item(i)
			p.op('s')
			continue
		}
		p.op('(')
		for j := i; j < i+k; j++ {
			item(j)
		}
		p.op('u')
	}
}

// torchStateDictPickle renders {'model_state_dict': OrderedDict(...)} the
// way torch.save pickles a state dict: each tensor as
// torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
// OrderedDict()) whose storage is the persistent id ('storage',
// torch.<Type>Storage, key, 'cpu', numel), and the state dict's
// _metadata (module name → {'version': 1}) set with BUILD.
func torchStateDictPickle(entries []torchEntry, storage string, es int64) []byte {
	p := &pickler{memo: map[string]int{}}
	p.op(0x80, 2)
	p.op('}')
	p.put()
	p.str("model_state_dict", false)
	p.emptyOrderedDict()
	p.setItems(len(entries), func(i int) {
		e := entries[i]
		p.str(e.name, false)
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.op('(')
		// Persistent id tuple, then BINPERSID.
		p.op('(')
		p.str("storage", true)
		p.global("torch", storage)
		p.str(strconv.Itoa(i), false)
		p.str("cpu", true)
		p.int(e.src.Size() / es)
		p.op('t')
		p.put()
		p.op('Q')
		p.int(0)
		p.intTuple(e.shape)
		stride := make([]int64, len(e.shape))
		s := int64(1)
		for d := len(e.shape) - 1; d >= 0; d-- {
			stride[d] = s
			s *= e.shape[d]
		}
		p.intTuple(stride)
		p.op(0x89) // requires_grad=False
		p.emptyOrderedDict()
		p.op('t')
		p.put()
		p.op('R')
		p.put()
	})
	// state_dict()'s _metadata: every module prefix with its version, ''
	// (the root) first, in first-use order.
	mods := []string{""}
	seen := map[string]bool{"": true}
	for _, e := range entries {
		parts := strings.Split(e.name, ".")
		for j := 1; j < len(parts); j++ {
			m := strings.Join(parts[:j], ".")
			if !seen[m] {
				seen[m] = true
				mods = append(mods, m)
			}
		}
	}
	p.op('}')
	p.put()
	p.str("_metadata", false)
	p.emptyOrderedDict()
	p.setItems(len(mods), func(i int) {
		p.str(mods[i], false)
		p.op('}')
		p.put()
		p.str("version", true)
		p.int(1)
		p.op('s')
	})
	p.op('s') // {'_metadata': ...}
	p.op('b') // BUILD: set the OrderedDict's __dict__
	p.op('s') // {'model_state_dict': ...}
	p.op('.')
	return p.b
}

package edge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/cespare/xxhash/v2"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/gemmaconv/gemmaconv/internal/atomicfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// WriteOptions tune Write.
type WriteOptions struct {
	// Progress, if set, is called after each chunk of tensor data with the
	// bytes written so far and the total.
	Progress func(doneBytes, totalBytes int64)
}

// chunkBytes is the most bytes read from a tensor source at once.
const chunkBytes = 4 << 20

// placed is a tensor's planned position and, once written, its hash.
type placed struct {
	offset, size int64
	hash         uint64
}

// Write writes m as a bundle. Tensors keep their order, types and bytes;
// the config (NormOffset included) and tokenizer are stored as they are.
// Tensor data streams from each Source in row-aligned chunks of at most
// 4 MiB, hashed (xxhash64) as it goes; the header, which holds the hashes,
// is sized before the data is written (hashes are fixed-width struct
// fields, so its size does not depend on them) and written last into the
// space reserved for it. The file is written under a temporary name in
// path's directory, synced and renamed into place: path is either the
// complete new file or untouched.
func Write(path string, m *ir.Model, opts WriteOptions) error {
	if err := checkModel(m); err != nil {
		return fmt.Errorf("bundle: %s: %w", path, err)
	}
	places := make([]placed, len(m.Tensors))
	var total int64
	for i, t := range m.Tensors {
		places[i].size = t.Size()
		total += places[i].size
	}
	// First pass: the header with zero offsets and hashes, for its size.
	hdr, err := buildHeader(m, places)
	if err != nil {
		return fmt.Errorf("bundle: %s: %w", path, err)
	}
	headerLen := int64(len(hdr))
	if headerLen > MaxHeaderSize {
		return fmt.Errorf("bundle: %s: header of %d bytes exceeds the limit of %d", path, headerLen, MaxHeaderSize)
	}
	dataStart := alignUp(PreambleSize+headerLen, Alignment)
	off := dataStart
	for i := range places {
		places[i].offset = off
		if places[i].size > math.MaxInt64/2-off {
			return fmt.Errorf("bundle: %s: tensor %s: file size overflows", path, m.Tensors[i].Name)
		}
		off = alignUp(off+places[i].size, Alignment)
	}

	tmp, err := atomicfile.Create(path)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer tmp.Abort()
	if err := writeData(tmp.File, m.Tensors, places, dataStart, total, opts.Progress); err != nil {
		return fmt.Errorf("bundle: %s: %w", path, err)
	}
	// Second pass: the same header with offsets and hashes, which must
	// fill exactly the space reserved.
	hdr, err = buildHeader(m, places)
	if err != nil {
		return fmt.Errorf("bundle: %s: %w", path, err)
	}
	if int64(len(hdr)) != headerLen {
		return fmt.Errorf("bundle: %s: internal error: header is %d bytes, %d were reserved", path, len(hdr), headerLen)
	}
	pre := make([]byte, dataStart)
	copy(pre, Magic)
	binary.LittleEndian.PutUint32(pre[4:], Version)
	binary.LittleEndian.PutUint64(pre[8:], uint64(headerLen))
	copy(pre[PreambleSize:], hdr)
	if len(m.Tensors) == 0 {
		pre = pre[:PreambleSize+headerLen]
	}
	if _, err := tmp.WriteAt(pre, 0); err != nil {
		return fmt.Errorf("bundle: writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Commit(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

// writeData streams every tensor to its planned offset, recording hashes.
func writeData(f *os.File, tensors []*ir.Tensor, places []placed, dataStart, total int64, progress func(int64, int64)) error {
	if _, err := f.Seek(dataStart, io.SeekStart); err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	pos := dataStart
	var zeros [Alignment]byte
	var buf []byte
	var done int64
	for i, t := range tensors {
		p := &places[i]
		if _, err := w.Write(zeros[:p.offset-pos]); err != nil {
			return err
		}
		row := t.RowBytes()
		chunk := max(chunkBytes/row, 1) * row
		if n := min(chunk, p.size); int64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		d := xxhash.New()
		for off := int64(0); off < p.size; {
			n := min(chunk, p.size-off)
			b := buf[:n]
			got, rerr := t.Source.ReadAt(b, off)
			if got != len(b) && rerr == nil {
				rerr = io.ErrUnexpectedEOF
			}
			if got != len(b) || (rerr != nil && !errors.Is(rerr, io.EOF)) {
				return fmt.Errorf("tensor %s: reading bytes [%d,%d): %w", t.Name, off, off+n, rerr)
			}
			d.Write(b)
			if _, err := w.Write(b); err != nil {
				return err
			}
			// Keep resident memory at a chunk, not a tensor.
			t.ReleaseRange(off, n)
			off += n
			done += n
			if progress != nil {
				progress(done, total)
			}
		}
		t.Release()
		p.hash = d.Sum64()
		pos = p.offset + p.size
	}
	return w.Flush()
}

// checkModel rejects models the reader would refuse, so that every file
// Write produces reads back.
func checkModel(m *ir.Model) error {
	if m == nil {
		return errors.New("nil model")
	}
	if err := m.Validate(); err != nil {
		return err
	}
	c := m.Config
	for _, x := range []int{c.NumLayers, c.Hidden, c.FFN, c.NumHeads, c.NumKVHeads, c.HeadDim, c.Vocab, c.ContextLength, c.SlidingWindow} {
		if x < 0 || x > math.MaxInt32 {
			return fmt.Errorf("config value %d is out of range", x)
		}
	}
	if tk := m.Tokenizer; tk != nil {
		n := len(tk.Pieces)
		if len(tk.Scores) != n || len(tk.Types) != n {
			return fmt.Errorf("tokenizer has %d pieces, %d scores and %d types", n, len(tk.Scores), len(tk.Types))
		}
		for _, id := range []int32{tk.BOS, tk.EOS, tk.UNK, tk.PAD, tk.EOT} {
			if id < -1 || int64(id) >= int64(n) {
				return fmt.Errorf("tokenizer special id %d is outside the %d-piece vocabulary", id, n)
			}
		}
	}
	seen := map[string]bool{}
	for _, kv := range m.Extra {
		if kv.Key == "" || len(kv.Key) > MaxKeyLength {
			return fmt.Errorf("metadata key of %d bytes (1 to %d allowed)", len(kv.Key), MaxKeyLength)
		}
		if seen[kv.Key] {
			return fmt.Errorf("metadata key %q appears twice", kv.Key)
		}
		seen[kv.Key] = true
	}
	for _, t := range m.Tensors {
		if len(t.Name) > MaxTensorName {
			return fmt.Errorf("tensor name %.40q... is %d bytes, over the limit of %d", t.Name, len(t.Name), MaxTensorName)
		}
		if len(t.Shape) > MaxDims {
			return fmt.Errorf("tensor %s: %d dimensions (at most %d)", t.Name, len(t.Shape), MaxDims)
		}
		if _, ok := byteSize(t.DType, t.Cols(), t.Rows()); !ok {
			return fmt.Errorf("tensor %s: size overflows", t.Name)
		}
	}
	return nil
}

// buildHeader builds the FlatBuffers header for m with the tensors placed
// as given.
func buildHeader(m *ir.Model, places []placed) ([]byte, error) {
	b := flatbuffers.NewBuilder(1 << 16)
	cfg := buildConfig(b, &m.Config)
	var tok flatbuffers.UOffsetT
	if m.Tokenizer != nil {
		tok = buildTokenizer(b, m.Tokenizer)
	}
	var extra flatbuffers.UOffsetT
	if len(m.Extra) > 0 {
		offs := make([]flatbuffers.UOffsetT, len(m.Extra))
		for i, kv := range m.Extra {
			key := b.CreateString(kv.Key)
			val, err := buildValue(b, kv.Value, 0)
			if err != nil {
				return nil, fmt.Errorf("metadata key %q: %w", kv.Key, err)
			}
			b.StartObject(numKVFields)
			b.PrependUOffsetTSlot(slot(vtKVKey), key, 0)
			b.PrependUOffsetTSlot(slot(vtKVValue), val, 0)
			offs[i] = b.EndObject()
		}
		extra = b.CreateVectorOfTables(offs)
	}
	toffs := make([]flatbuffers.UOffsetT, len(m.Tensors))
	for i, t := range m.Tensors {
		name := b.CreateString(t.Name)
		b.StartVector(8, len(t.Shape), 8)
		for j := len(t.Shape) - 1; j >= 0; j-- {
			b.PrependInt64(t.Shape[j])
		}
		shape := b.EndVector(len(t.Shape))
		b.StartObject(numTensorFields)
		b.PrependUOffsetTSlot(slot(vtTensorName), name, 0)
		b.PrependUOffsetTSlot(slot(vtTensorShape), shape, 0)
		b.PrependUint32(uint32(t.DType))
		b.Slot(slot(vtTensorDType))
		p := places[i]
		b.PrependStructSlot(slot(vtTensorData), createTensorData(b, uint64(p.offset), uint64(p.size), p.hash), 0)
		toffs[i] = b.EndObject()
	}
	tensors := b.CreateVectorOfTables(toffs)
	bundleStart(b)
	bundleAddConfig(b, cfg)
	if tok != 0 {
		bundleAddTokenizer(b, tok)
	}
	if extra != 0 {
		bundleAddExtra(b, extra)
	}
	bundleAddTensors(b, tensors)
	bundleAddAlignment(b, Alignment)
	b.Finish(bundleEnd(b))
	return b.FinishedBytes(), nil
}

// Scalar fields are always stored (see schema.go).
func putI64(b *flatbuffers.Builder, vt flatbuffers.VOffsetT, v int64) {
	b.PrependInt64(v)
	b.Slot(slot(vt))
}
func putI32(b *flatbuffers.Builder, vt flatbuffers.VOffsetT, v int32) {
	b.PrependInt32(v)
	b.Slot(slot(vt))
}
func putF32(b *flatbuffers.Builder, vt flatbuffers.VOffsetT, v float32) {
	b.PrependFloat32(v)
	b.Slot(slot(vt))
}
func putF64(b *flatbuffers.Builder, vt flatbuffers.VOffsetT, v float64) {
	b.PrependFloat64(v)
	b.Slot(slot(vt))
}
func putBool(b *flatbuffers.Builder, vt flatbuffers.VOffsetT, v bool) {
	b.PrependBool(v)
	b.Slot(slot(vt))
}

func buildConfig(b *flatbuffers.Builder, c *ir.Config) flatbuffers.UOffsetT {
	family := b.CreateString(string(c.Family))
	b.StartVector(1, len(c.Sliding), 1)
	for i := len(c.Sliding) - 1; i >= 0; i-- {
		b.PrependBool(c.Sliding[i])
	}
	sliding := b.EndVector(len(c.Sliding))
	b.StartObject(numConfigFields)
	// Largest fields first keeps padding out of the table.
	putI64(b, vtConfigNumLayers, int64(c.NumLayers))
	putI64(b, vtConfigHidden, int64(c.Hidden))
	putI64(b, vtConfigFFN, int64(c.FFN))
	putI64(b, vtConfigNumHeads, int64(c.NumHeads))
	putI64(b, vtConfigNumKVHeads, int64(c.NumKVHeads))
	putI64(b, vtConfigHeadDim, int64(c.HeadDim))
	putI64(b, vtConfigVocab, int64(c.Vocab))
	putI64(b, vtConfigContextLength, int64(c.ContextLength))
	putI64(b, vtConfigSlidingWindow, int64(c.SlidingWindow))
	putF64(b, vtConfigRopeBase, c.RopeBase)
	putF64(b, vtConfigRopeBaseLocal, c.RopeBaseLocal)
	putF64(b, vtConfigRopeScale, c.RopeScale)
	putF64(b, vtConfigQueryPreAttnScalar, c.QueryPreAttnScalar)
	b.PrependUOffsetTSlot(slot(vtConfigFamily), family, 0)
	b.PrependUOffsetTSlot(slot(vtConfigSliding), sliding, 0)
	putF32(b, vtConfigRMSNormEps, c.RMSNormEps)
	putF32(b, vtConfigAttnSoftcap, c.AttnSoftcap)
	putF32(b, vtConfigFinalSoftcap, c.FinalSoftcap)
	putF32(b, vtConfigNormOffset, c.NormOffset)
	putBool(b, vtConfigQKNorm, c.QKNorm)
	putBool(b, vtConfigPostNorms, c.PostNorms)
	putBool(b, vtConfigTiedEmbeddings, c.TiedEmbeddings)
	return b.EndObject()
}

func buildTokenizer(b *flatbuffers.Builder, tk *ir.Tokenizer) flatbuffers.UOffsetT {
	model := b.CreateString(tk.Model)
	norm := b.CreateString(tk.Normalizer)
	pieces := buildStrings(b, tk.Pieces)
	b.StartVector(4, len(tk.Scores), 4)
	for i := len(tk.Scores) - 1; i >= 0; i-- {
		b.PrependFloat32(tk.Scores[i])
	}
	scores := b.EndVector(len(tk.Scores))
	b.StartVector(4, len(tk.Types), 4)
	for i := len(tk.Types) - 1; i >= 0; i-- {
		b.PrependInt32(int32(tk.Types[i]))
	}
	types := b.EndVector(len(tk.Types))
	b.StartObject(numTokFields)
	b.PrependUOffsetTSlot(slot(vtTokModel), model, 0)
	b.PrependUOffsetTSlot(slot(vtTokNormalizer), norm, 0)
	b.PrependUOffsetTSlot(slot(vtTokPieces), pieces, 0)
	b.PrependUOffsetTSlot(slot(vtTokScores), scores, 0)
	b.PrependUOffsetTSlot(slot(vtTokTypes), types, 0)
	putI32(b, vtTokBOS, tk.BOS)
	putI32(b, vtTokEOS, tk.EOS)
	putI32(b, vtTokUNK, tk.UNK)
	putI32(b, vtTokPAD, tk.PAD)
	putI32(b, vtTokEOT, tk.EOT)
	putBool(b, vtTokAddBOS, tk.AddBOS)
	putBool(b, vtTokAddEOS, tk.AddEOS)
	putBool(b, vtTokAddSpacePrefix, tk.AddSpacePrefix)
	putBool(b, vtTokByteFallback, tk.ByteFallback)
	putBool(b, vtTokSplitDigits, tk.SplitDigits)
	putBool(b, vtTokRemoveExtraWhitespaces, tk.RemoveExtraWhitespaces)
	return b.EndObject()
}

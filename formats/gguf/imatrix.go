package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Importance matrices (llama.cpp tools/imatrix, common/imatrix-loader.cpp).
//
// llama-imatrix accumulates, for every matrix a model multiplies
// activations with, the sum over tokens of each input column's squared
// activation, and how many tokens it summed. The GGUF form (general.type
// "imatrix") stores per weight tensor NAME two F32 tensors:
// "NAME.in_sum2" with the sums ([cols] or [n_mat, cols] for expert stacks)
// and "NAME.counts" with the token count per matrix, plus the keys
// imatrix.datasets (string array), imatrix.chunk_count and
// imatrix.chunk_size (uint32). The legacy ".dat" form stores per entry
// the name, a call count ncall and the values already divided by the
// token count and multiplied by ncall, then optionally the chunk count and
// the dataset name.
//
// llama-quantize turns either into one weight per column: in_sum2/count
// (1 where the count is 0) for GGUF files, value/ncall for legacy ones.

// Imatrix keys.
const (
	KeyImatrixDatasets   = "imatrix.datasets"
	KeyImatrixChunkCount = "imatrix.chunk_count"
	KeyImatrixChunkSize  = "imatrix.chunk_size"
)

const (
	imatrixSumsSuffix   = ".in_sum2"
	imatrixCountsSuffix = ".counts"
	// maxImatrixFile bounds what ReadImatrix loads into memory; real files
	// are a few MB (one float per input column of each matrix).
	maxImatrixFile = 1 << 31
)

// Imatrix is an importance matrix file's content.
type Imatrix struct {
	// Entries maps a weight tensor's name (blk.0.attn_q.weight) to its
	// statistics.
	Entries map[string]ImatrixEntry
	// Datasets names the text files the statistics were collected on.
	Datasets []string
	// ChunkCount is the number of chunks processed; ChunkSize the tokens
	// per chunk (0 in legacy files).
	ChunkCount, ChunkSize uint32
	// Legacy: the file was in the old .dat format.
	Legacy bool
}

// ImatrixEntry holds one tensor's statistics.
type ImatrixEntry struct {
	// Sums has len(Counts) runs of one value per input column: summed
	// squared activations (GGUF), or mean squared activations times the
	// call count (legacy).
	Sums []float32
	// Counts has the number of activations summed per matrix (GGUF), or
	// the single call count (legacy).
	Counts []int64
}

// Weights returns the per-column importance weights llama-quantize
// derives from the file (tools/quantize load_imatrix), keyed by tensor
// name.
func (im *Imatrix) Weights() map[string][]float32 {
	out := make(map[string][]float32, len(im.Entries))
	for name, e := range im.Entries {
		w := make([]float32, len(e.Sums))
		if im.Legacy {
			var ncall int64
			if len(e.Counts) > 0 {
				ncall = e.Counts[0]
			}
			for i, s := range e.Sums {
				if ncall > 0 {
					w[i] = s / float32(ncall)
				} else {
					w[i] = s
				}
			}
		} else if len(e.Counts) > 0 {
			cols := len(e.Sums) / len(e.Counts)
			for j, c := range e.Counts {
				count := float32(c)
				for i := j * cols; i < (j+1)*cols; i++ {
					if count > 0 {
						w[i] = e.Sums[i] / count
					} else {
						w[i] = 1
					}
				}
			}
		}
		out[name] = w
	}
	return out
}

// ReadImatrix reads an importance matrix in llama.cpp's GGUF format or, if
// the file does not start with the GGUF magic, its legacy .dat format.
func ReadImatrix(path string) (*Imatrix, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("imatrix: %w", err)
	}
	if st.Size() > maxImatrixFile {
		return nil, fmt.Errorf("imatrix: %s: %d bytes is too large for an importance matrix", path, st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("imatrix: %w", err)
	}
	return ParseImatrix(path, data)
}

// ParseImatrix parses an importance matrix held in memory; name is used
// in errors.
func ParseImatrix(name string, data []byte) (*Imatrix, error) {
	if bytes.HasPrefix(data, []byte(Magic)) {
		return parseImatrixGGUF(name, data)
	}
	return parseImatrixLegacy(name, data)
}

func parseImatrixGGUF(name string, data []byte) (*Imatrix, error) {
	f, err := Parse(name, data)
	if err != nil {
		return nil, err
	}
	im := &Imatrix{Entries: map[string]ImatrixEntry{}}
	if len(f.Tensors) == 0 {
		return nil, fmt.Errorf("imatrix: %s: no tensors (not an importance matrix)", name)
	}
	if v, ok := f.Lookup("general.type"); ok && v != "imatrix" {
		return nil, fmt.Errorf("imatrix: %s: general.type is %v, not \"imatrix\"", name, v)
	}
	ds, okD := f.Lookup(KeyImatrixDatasets)
	if a, ok := ds.([]string); ok {
		im.Datasets = a
	}
	u32 := func(key string) (uint32, bool, error) {
		v, ok := f.Lookup(key)
		if !ok {
			return 0, false, nil
		}
		n, isU32 := v.(uint32)
		if !isU32 {
			return 0, true, fmt.Errorf("imatrix: %s: %s is %T, want uint32", name, key, v)
		}
		return n, true, nil
	}
	var okC, okS bool
	if im.ChunkCount, okC, err = u32(KeyImatrixChunkCount); err != nil {
		return nil, err
	}
	if im.ChunkSize, okS, err = u32(KeyImatrixChunkSize); err != nil {
		return nil, err
	}
	// llama-quantize refuses GGUF imatrix files without these keys.
	if !okD || !okC || !okS {
		return nil, fmt.Errorf("imatrix: %s: missing imatrix metadata (%s, %s and %s are required)", name, KeyImatrixDatasets, KeyImatrixChunkCount, KeyImatrixChunkSize)
	}

	type pair struct{ sums, counts *TensorInfo }
	pairs := map[string]*pair{}
	for _, t := range f.Tensors {
		var base string
		var isSums bool
		if b, ok := strings.CutSuffix(t.Name, imatrixSumsSuffix); ok {
			base, isSums = b, true
		} else if b, ok := strings.CutSuffix(t.Name, imatrixCountsSuffix); ok {
			base = b
		} else {
			continue // llama.cpp ignores other tensors
		}
		if t.Type != ir.F32 {
			return nil, &Error{name, fmt.Sprintf("tensor %q", t.Name), t.InfoOffset, fmt.Sprintf("type %s, want F32", t.Type)}
		}
		p := pairs[base]
		if p == nil {
			p = &pair{}
			pairs[base] = p
		}
		if isSums {
			p.sums = t
		} else {
			p.counts = t
		}
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("imatrix: %s: no %s/%s tensors (not an importance matrix)", name, imatrixSumsSuffix, imatrixCountsSuffix)
	}
	bases := make([]string, 0, len(pairs))
	for b := range pairs {
		bases = append(bases, b)
	}
	sort.Strings(bases)
	for _, base := range bases {
		p := pairs[base]
		if p.sums == nil || p.counts == nil {
			have := p.sums
			if have == nil {
				have = p.counts
			}
			return nil, &Error{name, fmt.Sprintf("tensor %q", have.Name), have.InfoOffset, "mismatched sums and counts for " + base}
		}
		sums, err := readF32(f, p.sums)
		if err != nil {
			return nil, err
		}
		cf, err := readF32(f, p.counts)
		if err != nil {
			return nil, err
		}
		if len(sums)%len(cf) != 0 {
			return nil, &Error{name, fmt.Sprintf("tensor %q", p.sums.Name), p.sums.InfoOffset,
				fmt.Sprintf("%d sums are not a whole number of rows for %d counts", len(sums), len(cf))}
		}
		counts := make([]int64, len(cf))
		for i, c := range cf {
			// llama.cpp rounds the stored float (std::lround).
			if !(c >= 0 && c < 1<<62) {
				return nil, &Error{name, fmt.Sprintf("tensor %q", p.counts.Name), f.DataOffset + p.counts.Offset + 4*int64(i),
					fmt.Sprintf("count %v is not a non-negative finite number", c)}
			}
			counts[i] = int64(math.Round(float64(c)))
		}
		im.Entries[base] = ImatrixEntry{Sums: sums, Counts: counts}
	}
	return im, nil
}

// readF32 reads an F32 tensor's values.
func readF32(f *File, t *TensorInfo) ([]float32, error) {
	raw := make([]byte, t.Size) // bounded: Parse checked it against the file size
	if _, err := f.Window(t).ReadAt(raw, 0); err != nil {
		return nil, err
	}
	out := make([]float32, len(raw)/4)
	if err := ir.DecodeFloats(ir.F32, raw, out); err != nil {
		return nil, fmt.Errorf("imatrix: %s: tensor %s: %w", f.Path, t.Name, err)
	}
	return out, nil
}

// parseImatrixLegacy reads the .dat format: int32 entry count; per entry
// int32 name length, name, int32 ncall, int32 nval, nval float32; then
// optionally int32 chunk count, int32 dataset name length, dataset name.
func parseImatrixLegacy(name string, data []byte) (*Imatrix, error) {
	off := 0
	fail := func(at int, format string, args ...any) error {
		return &Error{name, "legacy imatrix", int64(at), fmt.Sprintf(format, args...)}
	}
	i32 := func(what string) (int32, error) {
		if len(data)-off < 4 {
			return 0, fail(off, "%s needs 4 bytes, the file has %d left (truncated?)", what, len(data)-off)
		}
		v := int32(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		return v, nil
	}
	n, err := i32("entry count")
	if err != nil {
		return nil, err
	}
	// Each entry takes at least 16 bytes (three int32 and one value).
	if n < 1 || int64(n) > int64(len(data)-off)/16 {
		return nil, fail(0, "entry count %d is impossible for a %d-byte file (not an importance matrix?)", n, len(data))
	}
	im := &Imatrix{Entries: make(map[string]ImatrixEntry, n), Legacy: true}
	for i := int32(0); i < n; i++ {
		at := off
		l, err := i32("name length")
		if err != nil {
			return nil, err
		}
		if l < 0 || int64(l) > int64(len(data)-off) {
			return nil, fail(at, "entry %d: name length %d exceeds the %d bytes left", i, l, len(data)-off)
		}
		ename := string(data[off : off+int(l)])
		off += int(l)
		ncall, err := i32("call count")
		if err != nil {
			return nil, err
		}
		at = off
		nval, err := i32("value count")
		if err != nil {
			return nil, err
		}
		if nval < 1 || int64(nval) > int64(len(data)-off)/4 {
			return nil, fail(at, "entry %s: %d values do not fit in the %d bytes left", ename, nval, len(data)-off)
		}
		if _, dup := im.Entries[ename]; dup {
			return nil, fail(at, "entry %s appears twice", ename)
		}
		sums := make([]float32, nval)
		if err := ir.DecodeFloats(ir.F32, data[off:off+4*int(nval)], sums); err != nil {
			return nil, fail(off, "%v", err)
		}
		off += 4 * int(nval)
		im.Entries[ename] = ImatrixEntry{Sums: sums, Counts: []int64{int64(ncall)}}
	}
	// The trailer is optional, and llama.cpp ignores a truncated one.
	if len(data)-off >= 4 {
		c, _ := i32("chunk count")
		if c > 0 {
			im.ChunkCount = uint32(c)
		}
		if len(data)-off >= 4 {
			l, _ := i32("dataset length")
			if l > 0 && int64(l) <= int64(len(data)-off) {
				ds := data[off : off+int(l)]
				if z := bytes.IndexByte(ds, 0); z >= 0 {
					ds = ds[:z]
				}
				im.Datasets = []string{string(ds)}
			}
		}
	}
	return im, nil
}

// WriteImatrix writes im in llama.cpp's GGUF imatrix format, as
// llama-imatrix does: general.type, the three imatrix keys, then per entry
// in name order NAME.in_sum2 and NAME.counts (one-dimensional when there
// is a single matrix). Legacy contents are converted: each count is taken
// as a token count.
func WriteImatrix(path string, im *Imatrix) error {
	kvs := []ir.KV{
		{Key: "general.type", Value: "imatrix"},
		{Key: KeyImatrixDatasets, Value: append([]string{}, im.Datasets...)},
		{Key: KeyImatrixChunkCount, Value: im.ChunkCount},
		{Key: KeyImatrixChunkSize, Value: im.ChunkSize},
	}
	names := make([]string, 0, len(im.Entries))
	for n := range im.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var tensors []*ir.Tensor
	for _, n := range names {
		e := im.Entries[n]
		nmat := len(e.Counts)
		if nmat == 0 || len(e.Sums) == 0 {
			continue
		}
		if len(e.Sums)%nmat != 0 {
			return fmt.Errorf("imatrix: %s: entry %s has %d sums for %d matrices", path, n, len(e.Sums), nmat)
		}
		if len(n)+len(imatrixSumsSuffix) >= MaxTensorName {
			return fmt.Errorf("imatrix: %s: entry name %q is too long for a GGUF tensor name", path, n)
		}
		cols := int64(len(e.Sums) / nmat)
		sumShape, countShape := []int64{int64(nmat), cols}, []int64{int64(nmat), 1}
		if nmat == 1 {
			sumShape, countShape = []int64{cols}, []int64{1}
		}
		sums := make([]byte, 4*len(e.Sums))
		ir.EncodeF32(e.Sums, sums)
		cf := make([]float32, nmat)
		for i, c := range e.Counts {
			cf[i] = float32(c)
		}
		counts := make([]byte, 4*nmat)
		ir.EncodeF32(cf, counts)
		tensors = append(tensors,
			&ir.Tensor{Name: n + imatrixSumsSuffix, DType: ir.F32, Shape: sumShape, Source: bytes.NewReader(sums)},
			&ir.Tensor{Name: n + imatrixCountsSuffix, DType: ir.F32, Shape: countShape, Source: bytes.NewReader(counts)})
	}
	if len(tensors) == 0 {
		return fmt.Errorf("imatrix: %s: no entries to write", path)
	}
	return WriteFile(path, kvs, tensors, WriteOptions{})
}

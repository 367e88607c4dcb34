package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gemmaconv/gemmaconv/internal/atomicfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// writeChunk is the most tensor data Write holds in memory at once.
const writeChunk = 4 << 20

// stName is the safetensors dtype name of the IR types Write accepts, and
// alignRank the dtype's rank in the reference implementation's Dtype enum
// (ordered by increasing alignment): F16 < BF16 < F32.
func stName(t ir.DType) (name string, alignRank int, ok bool) {
	switch t {
	case ir.F16:
		return "F16", 0, true
	case ir.BF16:
		return "BF16", 1, true
	case ir.F32:
		return "F32", 2, true
	}
	return "", 0, false
}

// Write stores tensors (F32, F16 or BF16) in a safetensors file at path,
// laid out as the reference implementation (and so the Python library)
// lays them out: sorted by descending dtype alignment, then by name, the
// header compact JSON with "__metadata__" first (keys sorted) and padded
// with spaces to a multiple of 8 bytes. Data is streamed from each
// tensor's Source in chunks of at most 4 MiB into a temporary file in the
// target directory, which is synced and renamed over path. A nil metadata
// map writes no "__metadata__" entry.
func Write(path string, tensors []*ir.Tensor, metadata map[string]string) (err error) {
	type item struct {
		t     *ir.Tensor
		dtype string
		rank  int
		size  int64
	}
	items := make([]item, 0, len(tensors))
	seen := map[string]bool{}
	for _, t := range tensors {
		name, rank, ok := stName(t.DType)
		if !ok {
			return fmt.Errorf("safetensors: write %s: tensor %s has type %s; only F32, F16 and BF16 can be written", path, t.Name, t.DType)
		}
		if t.Name == "" || t.Name == "__metadata__" || !utf8.ValidString(t.Name) {
			return fmt.Errorf("safetensors: write %s: invalid tensor name %q", path, t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("safetensors: write %s: tensor %s appears twice", path, t.Name)
		}
		seen[t.Name] = true
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("safetensors: write %s: tensor %s has negative dimension in shape %v", path, t.Name, t.Shape)
			}
		}
		size, err := byteSize(name, t.Shape)
		if err != nil {
			return fmt.Errorf("safetensors: write %s: tensor %s: %v", path, t.Name, err)
		}
		if size > 0 && t.Source == nil {
			return fmt.Errorf("safetensors: write %s: tensor %s has no data source", path, t.Name)
		}
		items = append(items, item{t, name, rank, size})
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("safetensors: write %s: metadata entry %q is not valid UTF-8", path, k)
		}
	}
	sort.SliceStable(items, func(i, j int) bool {
		if items[i].rank != items[j].rank {
			return items[i].rank > items[j].rank
		}
		return items[i].t.Name < items[j].t.Name
	})

	var hdr strings.Builder
	hdr.WriteByte('{')
	first := true
	if metadata != nil {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		hdr.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				hdr.WriteByte(',')
			}
			writeJSONString(&hdr, k)
			hdr.WriteByte(':')
			writeJSONString(&hdr, metadata[k])
		}
		hdr.WriteByte('}')
		first = false
	}
	var off int64
	for _, it := range items {
		if !first {
			hdr.WriteByte(',')
		}
		first = false
		writeJSONString(&hdr, it.t.Name)
		hdr.WriteString(`:{"dtype":"`)
		hdr.WriteString(it.dtype)
		hdr.WriteString(`","shape":[`)
		for i, d := range it.t.Shape {
			if i > 0 {
				hdr.WriteByte(',')
			}
			hdr.WriteString(strconv.FormatInt(d, 10))
		}
		if off > math.MaxInt64-it.size {
			return fmt.Errorf("safetensors: write %s: total size overflows int64", path)
		}
		hdr.WriteString(`],"data_offsets":[`)
		hdr.WriteString(strconv.FormatInt(off, 10))
		hdr.WriteByte(',')
		off += it.size
		hdr.WriteString(strconv.FormatInt(off, 10))
		hdr.WriteString("]}")
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	if hdr.Len() > MaxHeaderSize {
		return fmt.Errorf("safetensors: write %s: header of %d bytes exceeds the %d-byte limit", path, hdr.Len(), MaxHeaderSize)
	}

	tmp, err := atomicfile.Create(path)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	defer tmp.Abort()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(hdr.Len()))
	if _, err = tmp.Write(n[:]); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if _, err = io.WriteString(tmp, hdr.String()); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	buf := make([]byte, min(writeChunk, max(off, 1)))
	for _, it := range items {
		for pos := int64(0); pos < it.size; {
			k := min(int64(len(buf)), it.size-pos)
			got, rerr := it.t.Source.ReadAt(buf[:k], pos)
			if int64(got) < k {
				if rerr == nil {
					rerr = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("safetensors: write %s: tensor %s: reading source at byte %d of %d: %w", path, it.t.Name, pos+int64(got), it.size, rerr)
			}
			if _, err = tmp.Write(buf[:k]); err != nil {
				return fmt.Errorf("safetensors: write %s: tensor %s: %w", path, it.t.Name, err)
			}
			pos += k
		}
	}
	if err = tmp.Commit(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}

// writeJSONString quotes s as serde_json does: only '"', '\\' and control
// characters are escaped; other characters are written as UTF-8.
func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

package zarr

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// memStore is an in-memory Store.
type memStore map[string][]byte

func (m memStore) Get(k string) (Value, error) {
	b, ok := m[k]
	if !ok {
		return nil, fmt.Errorf("mem: %q: %w", k, ErrNotFound)
	}
	return bytes.NewReader(b), nil
}

func (m memStore) List(prefix string) ([]string, error) {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (m memStore) String() string { return "mem" }

func compress(t *testing.T, codec string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch codec {
	case "zstd":
		e, _ := zstd.NewWriter(nil)
		return e.EncodeAll(b, nil)
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "zlib":
		w := zlib.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "":
		return b
	default:
		t.Fatalf("codec %s", codec)
	}
	return buf.Bytes()
}

// chunkData lays out the chunk of shape cs at grid position cidx as
// stored: stored dimension i is array dimension perm[i]; positions
// outside the array hold fill.
func chunkData(shape, cs, cidx []int64, es int, data, fillv []byte, perm []int, bigEnd bool) []byte {
	r := len(shape)
	if perm == nil {
		perm = make([]int, r)
		for i := range perm {
			perm[i] = i
		}
	}
	n := int64(1)
	for _, c := range cs {
		n *= c
	}
	out := make([]byte, 0, n*int64(es))
	st := make([]int64, r) // stored index
	for k := int64(0); k < n; k++ {
		rem := k
		for i := r - 1; i >= 0; i-- {
			st[i] = rem % cs[perm[i]]
			rem /= cs[perm[i]]
		}
		// Global position of the stored element, in array dimensions.
		g := make([]int64, r)
		in := true
		for i := 0; i < r; i++ {
			d := perm[i]
			g[d] = cidx[d]*cs[d] + st[i]
			if g[d] >= shape[d] {
				in = false
			}
		}
		if in {
			flat := int64(0)
			for d := 0; d < r; d++ {
				flat = flat*shape[d] + g[d]
			}
			e := append([]byte(nil), data[flat*int64(es):(flat+1)*int64(es)]...)
			if bigEnd {
				swap(e, es)
			}
			out = append(out, e...)
		} else {
			out = append(out, fillv...)
		}
	}
	return out
}

// grid iterates over all grid positions of shape/cs.
func grid(shape, cs []int64, fn func(idx []int64)) {
	r := len(shape)
	g := make([]int64, r)
	total := int64(1)
	for d := range shape {
		g[d] = (shape[d] + cs[d] - 1) / cs[d]
		total *= g[d]
	}
	idx := make([]int64, r)
	for k := int64(0); k < total; k++ {
		rem := k
		for d := r - 1; d >= 0; d-- {
			idx[d] = rem % g[d]
			rem /= g[d]
		}
		fn(append([]int64(nil), idx...))
	}
}

func randomData(n int64, es int, seed int64) []byte {
	b := make([]byte, n*int64(es))
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func checkArray(t *testing.T, a *Array, want []byte) {
	t.Helper()
	if a.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", a.Size(), len(want))
	}
	got := make([]byte, len(want))
	if n, err := a.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("whole read differs")
	}
	// Uneven pieces, including unaligned offsets, forwards and backwards.
	for _, piece := range []int{1, 3, 7, 64} {
		for off := len(want) - 1; off >= 0; off -= piece * 5 {
			end := min(off+piece, len(want))
			p := make([]byte, end-off)
			if _, err := a.ReadAt(p, int64(off)); err != nil {
				t.Fatalf("ReadAt(%d bytes at %d): %v", len(p), off, err)
			}
			if !bytes.Equal(p, want[off:end]) {
				t.Fatalf("ReadAt(%d bytes at %d) differs", len(p), off)
			}
		}
	}
	if _, err := a.ReadAt(make([]byte, 4), int64(len(want))); err != io.EOF {
		t.Errorf("read past the end: %v", err)
	}
}

func TestV2Arrays(t *testing.T) {
	cases := []struct {
		name, dtype, order, comp string
		shape, chunks            []int64
		es                       int
		bigEnd                   bool
		missing                  int // index of a chunk left out (-1 none)
	}{
		{"raw", "<f4", "C", "", []int64{5, 7}, []int64{2, 3}, 4, false, -1},
		{"zstd-missing", "<f4", "C", "zstd", []int64{5, 7}, []int64{2, 3}, 4, false, 4},
		{"rows", "bfloat16", "C", "zstd", []int64{9, 16}, []int64{4, 16}, 2, false, -1},
		{"whole", "bfloat16", "C", "", []int64{6, 4, 8}, []int64{6, 4, 8}, 2, false, -1},
		{"fortran-big", ">i2", "F", "gzip", []int64{5, 6}, []int64{3, 4}, 2, true, 1},
		{"zlib-3d", "<u4", "C", "zlib", []int64{3, 4, 5}, []int64{2, 4, 5}, 4, false, -1},
		{"1d", "<i4", "C", "zstd", []int64{8}, []int64{8}, 4, false, -1},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fillv := []byte{0, 0, 0xc0, 0x3f}[:c.es] // 1.5 as f32 (or its low bytes)
			fillJSON := "1.5"
			if c.dtype != "<f4" {
				fillJSON, fillv = "0", make([]byte, c.es)
			}
			comp := "null"
			if c.comp != "" {
				comp = fmt.Sprintf(`{"id":%q,"level":1}`, c.comp)
			}
			meta := fmt.Sprintf(`{"zarr_format":2,"shape":%s,"chunks":%s,"dtype":%q,"order":%q,"compressor":%s,"fill_value":%s,"filters":null}`,
				js(c.shape), js(c.chunks), c.dtype, c.order, comp, fillJSON)
			n := int64(1)
			for _, d := range c.shape {
				n *= d
			}
			data := randomData(n, c.es, int64(ci))
			st := memStore{"arr/.zarray": []byte(meta)}
			var perm []int
			if c.order == "F" {
				for i := len(c.shape) - 1; i >= 0; i-- {
					perm = append(perm, i)
				}
			}
			k := 0
			want := append([]byte(nil), data...)
			grid(c.shape, c.chunks, func(idx []int64) {
				m, _ := ParseV2([]byte(meta))
				if k == c.missing {
					// Absent chunk: expect the fill value there.
					fillRegion(want, c.shape, c.chunks, idx, c.es, fillv)
				} else {
					st["arr/"+m.ChunkKey(idx)] = compress(t, c.comp, chunkData(c.shape, c.chunks, idx, c.es, data, fillv, perm, c.bigEnd))
				}
				k++
			})
			a, err := Open(st, "arr/")
			if err != nil {
				t.Fatal(err)
			}
			checkArray(t, a, want)
			a.Release()
		})
	}
}

func fillRegion(want []byte, shape, cs, cidx []int64, es int, fillv []byte) {
	n := int64(len(want) / es)
	r := len(shape)
	idx := make([]int64, r)
	for e := int64(0); e < n; e++ {
		rem := e
		for d := r - 1; d >= 0; d-- {
			idx[d] = rem % shape[d]
			rem /= shape[d]
		}
		in := true
		for d := range idx {
			if idx[d]/cs[d] != cidx[d] {
				in = false
			}
		}
		if in {
			copy(want[e*int64(es):], fillv)
		}
	}
}

func js(v []int64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprint(x))
	}
	return "[" + strings.Join(s, ",") + "]"
}

func TestV3Sharded(t *testing.T) {
	shape, shard, inner := []int64{5, 7}, []int64{4, 6}, []int64{2, 3}
	es := 4
	meta := fmt.Sprintf(`{"zarr_format":3,"node_type":"array","shape":%s,"data_type":"float32",
		"chunk_grid":{"name":"regular","configuration":{"chunk_shape":%s}},
		"chunk_key_encoding":{"name":"default"},"fill_value":"NaN",
		"codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":%s,
			"codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":3,"checksum":false}}],
			"index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}],"index_location":"end"}}]}`,
		js(shape), js(shard), js(inner))
	data := randomData(35, es, 7)
	nan := binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(math.NaN())))
	want := append([]byte(nil), data...)
	st := memStore{"w/zarr.json": []byte(meta)}
	m, err := ParseV3([]byte(meta))
	if err != nil {
		t.Fatal(err)
	}
	per := []int64{shard[0] / inner[0], shard[1] / inner[1]}
	grid(shape, shard, func(sidx []int64) {
		if sidx[0] == 1 && sidx[1] == 1 {
			// Whole shard absent.
			for i := int64(0); i < per[0]; i++ {
				for j := int64(0); j < per[1]; j++ {
					fillRegion(want, shape, inner, []int64{sidx[0]*per[0] + i, sidx[1]*per[1] + j}, es, nan)
				}
			}
			return
		}
		var body, index []byte
		for i := int64(0); i < per[0]; i++ {
			for j := int64(0); j < per[1]; j++ {
				cidx := []int64{sidx[0]*per[0] + i, sidx[1]*per[1] + j}
				if (i+j)%3 == 1 || cidx[0]*inner[0] >= shape[0] {
					// Absent inner chunk.
					index = binary.LittleEndian.AppendUint64(index, math.MaxUint64)
					index = binary.LittleEndian.AppendUint64(index, math.MaxUint64)
					if cidx[0]*inner[0] < shape[0] {
						fillRegion(want, shape, inner, cidx, es, nan)
					}
					continue
				}
				enc := compress(t, "zstd", chunkData(shape, inner, cidx, es, data, nan, nil, false))
				index = binary.LittleEndian.AppendUint64(index, uint64(len(body)))
				index = binary.LittleEndian.AppendUint64(index, uint64(len(enc)))
				body = append(body, enc...)
			}
		}
		index = binary.LittleEndian.AppendUint32(index, crc32.Checksum(index, castagnoli))
		st["w/"+m.ChunkKey(sidx)] = append(body, index...)
	})
	a, err := Open(st, "w/")
	if err != nil {
		t.Fatal(err)
	}
	checkArray(t, a, want)
	a.Release()

	// A corrupt index is a checksum error naming the shard.
	key := "w/c/0/0"
	b := append([]byte(nil), st[key]...)
	b[len(b)-10] ^= 1
	st[key] = b
	a, _ = Open(st, "w/")
	if _, err := a.ReadAt(make([]byte, 4), 0); err == nil || !strings.Contains(err.Error(), "CRC-32C") || !strings.Contains(err.Error(), key) {
		t.Errorf("corrupt index: %v", err)
	}
	// A shard too small for its index.
	st[key] = []byte{1, 2, 3}
	a, _ = Open(st, "w/")
	if _, err := a.ReadAt(make([]byte, 4), 0); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("short shard: %v", err)
	}
}

func TestV3TransposeAndScalar(t *testing.T) {
	shape, cs := []int64{3, 5}, []int64{2, 4}
	meta := fmt.Sprintf(`{"zarr_format":3,"node_type":"array","shape":%s,"data_type":"int16",
		"chunk_grid":{"name":"regular","configuration":{"chunk_shape":%s}},
		"chunk_key_encoding":{"name":"v2"},"fill_value":7,
		"codecs":[{"name":"transpose","configuration":{"order":[1,0]}},{"name":"bytes","configuration":{"endian":"big"}},{"name":"gzip","configuration":{"level":1}},{"name":"crc32c"}]}`, js(shape), js(cs))
	m, err := ParseV3([]byte(meta))
	if err != nil {
		t.Fatal(err)
	}
	data := randomData(15, 2, 3)
	st := memStore{"zarr.json": []byte(meta)}
	grid(shape, cs, func(idx []int64) {
		enc := compress(t, "gzip", chunkData(shape, cs, idx, 2, data, []byte{7, 0}, []int{1, 0}, true))
		st[m.ChunkKey(idx)] = binary.LittleEndian.AppendUint32(enc, crc32.Checksum(enc, castagnoli))
	})
	a, err := Open(st, "")
	if err != nil {
		t.Fatal(err)
	}
	checkArray(t, a, data)

	// A 0-d array with its single chunk absent reads as the fill value.
	st = memStore{"s/zarr.json": []byte(`{"zarr_format":3,"node_type":"array","shape":[],"data_type":"bfloat16",
		"chunk_grid":{"name":"regular","configuration":{"chunk_shape":[]}},"chunk_key_encoding":{"name":"default"},
		"fill_value":1.0,"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}`)}
	a, err = Open(st, "s/")
	if err != nil {
		t.Fatal(err)
	}
	checkArray(t, a, []byte{0x80, 0x3f})
}

func TestStreamedChunks(t *testing.T) {
	old := smallChunk
	smallChunk = 64
	defer func() { smallChunk = old }()
	shape, cs := []int64{40, 32}, []int64{16, 32}
	meta := fmt.Sprintf(`{"zarr_format":2,"shape":%s,"chunks":%s,"dtype":"bfloat16","order":"C","compressor":{"id":"zstd"},"fill_value":null}`, js(shape), js(cs))
	data := randomData(40*32, 2, 9)
	st := memStore{".zarray": []byte(meta)}
	m, _ := ParseV2([]byte(meta))
	grid(shape, cs, func(idx []int64) {
		st[m.ChunkKey(idx)] = compress(t, "zstd", chunkData(shape, cs, idx, 2, data, []byte{0, 0}, nil, false))
	})
	a, err := Open(st, "")
	if err != nil {
		t.Fatal(err)
	}
	checkArray(t, a, data)
	a.Release()

	// A chunk that decodes short is an error naming it.
	st["1.0"] = compress(t, "zstd", make([]byte, 100))
	a, _ = Open(st, "")
	if _, err := a.ReadAt(make([]byte, 64), 16*32*2+200); err == nil || !strings.Contains(err.Error(), "1.0") {
		t.Errorf("short chunk: %v", err)
	}
	// Garbage instead of a zstd frame.
	st["2.0"] = []byte("not zstd at all")
	a, _ = Open(st, "")
	if _, err := a.ReadAt(make([]byte, 2), 32*32*2); err == nil || !strings.Contains(err.Error(), "2.0") {
		t.Errorf("garbage chunk: %v", err)
	}
}

func TestMetadataErrors(t *testing.T) {
	for _, doc := range []string{
		`{}`,
		`{"zarr_format":2,"shape":[2],"chunks":[0],"dtype":"<f4"}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1,1],"dtype":"<f4"}`,
		`{"zarr_format":2,"shape":[-1],"chunks":[1],"dtype":"<f4"}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"<f3"}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":[["a","<f4"]]}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"<f4","compressor":{"id":"blosc"}}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"<f4","filters":[{"id":"delta"}]}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"<f4","order":"X"}`,
		`{"zarr_format":2,"shape":[2],"chunks":[1],"dtype":"<i4","fill_value":1.5}`,
		`{"zarr_format":2,"shape":[4611686018427387904,4],"chunks":[1,1],"dtype":"<f4"}`,
		`{"zarr_format":3,"node_type":"group"}`,
		`{"zarr_format":3,"node_type":"array","shape":[2],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2]}},"codecs":[]}`,
		`{"zarr_format":3,"node_type":"array","shape":[2],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2]}},"codecs":[{"name":"zstd"},{"name":"bytes"}]}`,
		`{"zarr_format":3,"node_type":"array","shape":[4],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[4]}},"codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":[3],"codecs":[{"name":"bytes"}],"index_codecs":[{"name":"bytes"}]}}]}`,
		`{"zarr_format":3,"node_type":"array","shape":[2],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2]}},"codecs":[{"name":"transpose","configuration":{"order":[0,0]}},{"name":"bytes"}]}`,
	} {
		var err error
		if strings.Contains(doc, `"zarr_format":3`) {
			_, err = ParseV3([]byte(doc))
		} else {
			_, err = ParseV2([]byte(doc))
		}
		if err == nil {
			t.Errorf("accepted %s", doc)
		}
	}
}

func TestChunkKeys(t *testing.T) {
	for _, c := range []struct {
		doc  string
		idx  []int64
		want string
	}{
		{`{"zarr_format":2,"shape":[4,4],"chunks":[2,2],"dtype":"<f4"}`, []int64{1, 0}, "1.0"},
		{`{"zarr_format":2,"shape":[4,4],"chunks":[2,2],"dtype":"<f4","dimension_separator":"/"}`, []int64{1, 0}, "1/0"},
		{`{"zarr_format":2,"shape":[],"chunks":[],"dtype":"<f4"}`, nil, "0"},
		{`{"zarr_format":3,"node_type":"array","shape":[4,4],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2,2]}},"chunk_key_encoding":{"name":"default"},"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}`, []int64{1, 0}, "c/1/0"},
		{`{"zarr_format":3,"node_type":"array","shape":[4,4],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2,2]}},"chunk_key_encoding":{"name":"default","configuration":{"separator":"."}},"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}`, []int64{1, 0}, "c.1.0"},
		{`{"zarr_format":3,"node_type":"array","shape":[],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[]}},"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}`, nil, "c"},
	} {
		var m *Metadata
		var err error
		if strings.Contains(c.doc, `"zarr_format":3`) {
			m, err = ParseV3([]byte(c.doc))
		} else {
			m, err = ParseV2([]byte(c.doc))
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := m.ChunkKey(c.idx); got != c.want {
			t.Errorf("%s: key %q, want %q", c.doc, got, c.want)
		}
	}
}

func TestMissingMetadata(t *testing.T) {
	if _, err := Open(memStore{}, "x/"); !errors.Is(err, ErrNotFound) {
		t.Errorf("got %v", err)
	}
}

// FuzzMetadata: hostile .zarray / zarr.json must fail cleanly, and
// accepted metadata must give a usable array over an empty store.
func FuzzMetadata(f *testing.F) {
	f.Add([]byte(`{"chunks":[8],"compressor":{"id":"zstd","level":1},"dimension_separator":".","dtype":"<i4","fill_value":null,"filters":null,"order":"C","shape":[8],"zarr_format":2}`), false)
	f.Add([]byte(`{"zarr_format":2,"shape":[5,6],"chunks":[3,4],"dtype":">i2","order":"F","compressor":{"id":"gzip"},"fill_value":3}`), false)
	f.Add([]byte(`{"zarr_format":2,"shape":[2,2],"chunks":[1,2],"dtype":"bfloat16","fill_value":"NaN"}`), false)
	f.Add([]byte(`{"chunk_grid":{"configuration":{"chunk_shape":[8]},"name":"regular"},"chunk_key_encoding":{"name":"default"},"codecs":[{"configuration":{"chunk_shape":[8],"codecs":[{"configuration":{"endian":"little"},"name":"bytes"},{"configuration":{"checksum":false,"level":3},"name":"zstd"}],"index_codecs":[{"configuration":{"endian":"little"},"name":"bytes"},{"name":"crc32c"}],"index_location":"end"},"name":"sharding_indexed"}],"data_type":"int32","fill_value":0,"node_type":"array","shape":[8],"zarr_format":3}`), true)
	f.Add([]byte(`{"zarr_format":3,"node_type":"array","shape":[3,5],"data_type":"int16","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2,4]}},"chunk_key_encoding":{"name":"v2"},"fill_value":"0x0007","codecs":[{"name":"transpose","configuration":{"order":[1,0]}},{"name":"bytes","configuration":{"endian":"big"}},{"name":"crc32c"}]}`), true)
	f.Fuzz(func(t *testing.T, doc []byte, v3 bool) {
		var m *Metadata
		var err error
		if v3 {
			m, err = ParseV3(doc)
		} else {
			m, err = ParseV2(doc)
		}
		if err != nil {
			return
		}
		a, err := NewArray(memStore{}, "", m)
		if err != nil {
			return
		}
		// Every chunk is absent: reads give the fill value. Read at most
		// the first and last few elements so huge shapes stay cheap.
		es := int64(m.DType.Size)
		n := min(a.Size(), 64*es)
		if n > 0 {
			b := make([]byte, n)
			if _, err := a.ReadAt(b, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if _, err := a.ReadAt(b, a.Size()-n); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
	})
}

// FuzzChunk: hostile chunk bytes (a v2 zstd chunk, a v3 shard with its
// index) give errors, not panics or unbounded allocations.
func FuzzChunk(f *testing.F) {
	v2 := `{"zarr_format":2,"shape":[4,3],"chunks":[4,3],"dtype":"<f4","compressor":{"id":"zstd"},"fill_value":0}`
	v3 := `{"zarr_format":3,"node_type":"array","shape":[4,3],"data_type":"float32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[4,3]}},
		"chunk_key_encoding":{"name":"default"},"fill_value":0,"codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":[2,3],
		"codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd"}],
		"index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}]}}]}`
	e, _ := zstd.NewWriter(nil)
	chunk := e.EncodeAll(make([]byte, 48), nil)
	f.Add(chunk, false)
	var shard []byte
	shard = append(shard, e.EncodeAll(make([]byte, 24), nil)...)
	n := len(shard)
	idx := binary.LittleEndian.AppendUint64(nil, 0)
	idx = binary.LittleEndian.AppendUint64(idx, uint64(n))
	idx = binary.LittleEndian.AppendUint64(idx, math.MaxUint64)
	idx = binary.LittleEndian.AppendUint64(idx, math.MaxUint64)
	idx = binary.LittleEndian.AppendUint32(idx, crc32.Checksum(idx, castagnoli))
	f.Add(append(shard, idx...), true)
	f.Fuzz(func(t *testing.T, data []byte, sharded bool) {
		st := memStore{".zarray": []byte(v2), "0.0": data}
		if sharded {
			st = memStore{"zarr.json": []byte(v3), "c/0/0": data}
		}
		a, err := Open(st, "")
		if err != nil {
			t.Fatal(err)
		}
		defer a.Release()
		a.ReadAt(make([]byte, a.Size()), 0)
	})
}

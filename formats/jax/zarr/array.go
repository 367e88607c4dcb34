package zarr

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// smallChunk is the largest decoded chunk that is decoded whole and
// cached; larger compressed chunks are decoded as forward-only streams so
// that a multi-GiB chunk never sits in memory. (A variable for tests.)
var smallChunk int64 = 16 << 20

// Decoding limits.
const (
	cacheBudget    = 64 << 20 // decoded bytes kept across all arrays
	maxOpenStreams = 4        // streaming decoders kept across all arrays
	maxEntries     = 4096     // cached chunk readers of any kind
	maxZstdWindow  = 64 << 20
	maxMetaBytes   = 1 << 20 // .zarray / zarr.json
	maxWholeDecode = 1 << 30 // a value whose decoded size is not known in advance
	crcPiece       = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Array is an open zarr array. It implements io.ReaderAt over the array's
// elements in C order, little-endian, whatever the chunk layout; reads
// decode only the chunks they touch. It is safe for concurrent use.
type Array struct {
	Meta  *Metadata
	store Store
	// prefix is the array's key prefix inside the store ("a/" or "").
	prefix string
	name   string

	chunk  []int64 // innermost (effective) chunk shape
	shard  *Sharding
	outer  []Codec // codecs of the outer chunk (the shard when sharded)
	inner  []Codec // codecs of inner chunks when sharded
	layout []int64 // storage strides (elements) of an effective chunk
	cOrder bool    // layout is C-contiguous
	bigEnd bool
}

// Open reads the metadata of the array at prefix (a key prefix ending in
// "/", or "" for the store root): .zarray for zarr v2, zarr.json for v3.
func Open(store Store, prefix string) (*Array, error) {
	name := strings.TrimSuffix(prefix, "/")
	var meta *Metadata
	v, err := store.Get(prefix + ".zarray")
	if err == nil {
		data, err := readAll(v, maxMetaBytes, store.String(), prefix+".zarray")
		if err != nil {
			return nil, err
		}
		if meta, err = ParseV2(data); err != nil {
			return nil, fmt.Errorf("zarr: %s: %s: %w", store, prefix+".zarray", err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	} else {
		v, err = store.Get(prefix + "zarr.json")
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("zarr: %s: array %q has neither .zarray nor zarr.json: %w", store, name, ErrNotFound)
			}
			return nil, err
		}
		data, err := readAll(v, maxMetaBytes, store.String(), prefix+"zarr.json")
		if err != nil {
			return nil, err
		}
		if meta, err = ParseV3(data); err != nil {
			return nil, fmt.Errorf("zarr: %s: %s: %w", store, prefix+"zarr.json", err)
		}
	}
	return NewArray(store, prefix, meta)
}

// NewArray opens an array whose metadata is already parsed.
func NewArray(store Store, prefix string, meta *Metadata) (*Array, error) {
	a := &Array{Meta: meta, store: store, prefix: prefix, name: strings.TrimSuffix(prefix, "/"), chunk: meta.ChunkShape}
	codecs := meta.Codecs
	var perm []int
	for len(codecs) > 0 && codecs[0].Name == "transpose" {
		perm = compose(perm, codecs[0].Order)
		codecs = codecs[1:]
	}
	if len(codecs) == 0 {
		return nil, fmt.Errorf("zarr: %s: array %q has no array→bytes codec", store, a.name)
	}
	a.outer = codecs
	if codecs[0].Name == "sharding_indexed" {
		a.shard = codecs[0].Shard
		a.chunk = a.shard.ChunkShape
		in := a.shard.Codecs
		for len(in) > 0 && in[0].Name == "transpose" {
			perm = compose(perm, in[0].Order)
			in = in[1:]
		}
		if len(in) == 0 || in[0].Name != "bytes" {
			return nil, fmt.Errorf("zarr: %s: array %q: nested sharding is not supported", store, a.name)
		}
		a.inner = in
		a.bigEnd = in[0].BigEndian
	} else {
		a.bigEnd = codecs[0].BigEndian
	}
	a.layout, a.cOrder = strides(a.chunk, perm)
	return a, nil
}

// compose returns the permutation of applying p then q.
func compose(p, q []int) []int {
	if p == nil {
		return append([]int(nil), q...)
	}
	out := make([]int, len(q))
	for i, j := range q {
		out[i] = p[j]
	}
	return out
}

// strides returns, for each array dimension, the element stride of the
// chunk's stored layout: stored dimension i is array dimension perm[i].
func strides(chunk []int64, perm []int) ([]int64, bool) {
	r := len(chunk)
	if perm == nil {
		perm = make([]int, r)
		for i := range perm {
			perm[i] = i
		}
	}
	st := make([]int64, r)
	s := int64(1)
	identity := true
	for i := r - 1; i >= 0; i-- {
		st[perm[i]] = s
		s *= chunk[perm[i]]
		if perm[i] != i {
			identity = false
		}
	}
	return st, identity
}

// Name is the array's path in its store.
func (a *Array) Name() string { return a.name }

// Shape is the array's shape.
func (a *Array) Shape() []int64 { return a.Meta.Shape }

// DType is the element type.
func (a *Array) DType() DType { return a.Meta.DType }

// Size is the array's byte size: elements × element size.
func (a *Array) Size() int64 { return a.Meta.NumElements() * int64(a.Meta.DType.Size) }

// ReadAt reads the array's C-order little-endian bytes.
func (a *Array) ReadAt(p []byte, off int64) (int, error) {
	size := a.Size()
	if off < 0 {
		return 0, fmt.Errorf("zarr: %s: negative offset", a.name)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	short := false
	if int64(n) > size-off {
		n, short = int(size-off), true
	}
	es := int64(a.Meta.DType.Size)
	e0 := off / es
	e1 := (off + int64(n) + es - 1) / es
	if off%es == 0 && int64(n)%es == 0 {
		if err := a.readElems(p[:n], e0, e1-e0); err != nil {
			return 0, err
		}
	} else {
		tmp := make([]byte, (e1-e0)*es)
		if err := a.readElems(tmp, e0, e1-e0); err != nil {
			return 0, err
		}
		copy(p[:n], tmp[off-e0*es:])
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// readElems fills dst with elements [e0, e0+n) in C order.
func (a *Array) readElems(dst []byte, e0, n int64) error {
	m := a.Meta
	rank := len(m.Shape)
	es := int64(m.DType.Size)
	idx := make([]int64, rank)
	cidx := make([]int64, rank)
	for n > 0 {
		// Element index → N-d index.
		rem := e0
		for d := rank - 1; d >= 0; d-- {
			idx[d] = rem % m.Shape[d]
			rem /= m.Shape[d]
		}
		run := int64(1)
		local := int64(0)
		for d := 0; d < rank; d++ {
			cidx[d] = idx[d] / a.chunk[d]
			local += (idx[d] % a.chunk[d]) * a.layout[d]
		}
		if a.cOrder && rank > 0 {
			// Contiguous in both the array and the chunk: to the end of the
			// chunk's row, extended over whole rows while the chunk spans
			// the array's full extent in the inner dimensions.
			d := rank - 1
			run = min(a.chunk[d]-idx[d]%a.chunk[d], m.Shape[d]-idx[d])
			span := m.Shape[d]
			for d > 0 && idx[d] == 0 && a.chunk[d] == m.Shape[d] {
				d--
				rows := min(a.chunk[d]-idx[d]%a.chunk[d], m.Shape[d]-idx[d])
				run = rows * span
				span *= m.Shape[d]
			}
		}
		run = min(run, n)
		out := dst[:run*es]
		cd, err := a.chunkAt(cidx)
		if err != nil {
			return err
		}
		if cd == nil {
			fill(out, m.Fill)
		} else if err := readFull(cd, out, local*es); err != nil {
			return fmt.Errorf("zarr: %s: array %q, chunk %v: %w", a.store, a.name, cidx, err)
		}
		if a.bigEnd {
			swap(out, int(es))
		}
		dst = dst[run*es:]
		e0 += run
		n -= run
	}
	return nil
}

func fill(dst, pattern []byte) {
	if len(pattern) == 0 {
		return
	}
	for i := 0; i < len(dst); i += len(pattern) {
		copy(dst[i:], pattern)
	}
}

func swap(b []byte, es int) {
	for i := 0; i+es <= len(b); i += es {
		e := b[i : i+es]
		for j, k := 0, es-1; j < k; j, k = j+1, k-1 {
			e[j], e[k] = e[k], e[j]
		}
	}
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func readAll(v Value, limit int64, store, key string) ([]byte, error) {
	if v.Size() > limit {
		return nil, fmt.Errorf("zarr: %s: %s is %d bytes, over the %d-byte limit", store, key, v.Size(), limit)
	}
	b := make([]byte, v.Size())
	if err := readFull(v, b, 0); err != nil && len(b) > 0 {
		return nil, fmt.Errorf("zarr: %s: reading %s: %w", store, key, err)
	}
	return b, nil
}

// chunkElems is the number of elements of an effective chunk.
func (a *Array) chunkBytes(shape []int64) int64 {
	n := int64(a.Meta.DType.Size)
	for _, c := range shape {
		n *= c
	}
	return n
}

// chunkAt returns the decoded storage bytes of the effective chunk at
// grid position cidx, or nil when it is absent (fill value).
func (a *Array) chunkAt(cidx []int64) (io.ReaderAt, error) {
	if a.shard == nil {
		key := a.prefix + a.Meta.ChunkKey(cidx)
		return cache.get(a, key, func() (io.ReaderAt, int64, error) {
			v, err := a.store.Get(key)
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					return nil, 0, nil
				}
				return nil, 0, err
			}
			return decodeBytes(v, a.outer[1:], a.chunkBytes(a.chunk), key)
		})
	}
	// Sharded: locate the shard and the inner chunk's index entry.
	rank := len(cidx)
	sidx := make([]int64, rank)
	var inner int64
	for d := 0; d < rank; d++ {
		per := a.Meta.ChunkShape[d] / a.chunk[d]
		sidx[d] = cidx[d] / per
		inner = inner*per + cidx[d]%per
	}
	skey := a.prefix + a.Meta.ChunkKey(sidx)
	ckey := fmt.Sprintf("%s#%d", skey, inner)
	return cache.get(a, ckey, func() (io.ReaderAt, int64, error) {
		sv, err := cache.get(a, skey, func() (io.ReaderAt, int64, error) {
			v, err := a.store.Get(skey)
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					return nil, 0, nil
				}
				return nil, 0, err
			}
			// The shard's own bytes→bytes codecs (rare); its size is not
			// known in advance, so only whole-value codecs apply.
			if len(a.outer) > 1 {
				src, n, err := decodeBytes(v, a.outer[1:], -1, skey)
				return src, n, err
			}
			return v, 0, nil
		})
		if err != nil || sv == nil {
			return nil, 0, err
		}
		idx, err := a.shardIndex(sv, skey)
		if err != nil {
			return nil, 0, err
		}
		off, n := idx[2*inner], idx[2*inner+1]
		if off == ^uint64(0) && n == ^uint64(0) {
			return nil, 0, nil
		}
		ssize := sizeOf(sv)
		if off+n < off || off+n > uint64(ssize) {
			return nil, 0, fmt.Errorf("zarr: %s: shard %s: inner chunk %d at offset %d, length %d lies beyond the shard's %d bytes", a.store, skey, inner, off, n, ssize)
		}
		sec := io.NewSectionReader(sv, int64(off), int64(n))
		return decodeBytes(sec, a.inner[1:], a.chunkBytes(a.chunk), ckey)
	})
}

func sizeOf(r io.ReaderAt) int64 {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size()
	}
	return 0
}

// shardIndex reads and checks a shard's index of (offset, length) pairs.
func (a *Array) shardIndex(sv io.ReaderAt, skey string) ([]uint64, error) {
	n := int64(1)
	for d := range a.chunk {
		n *= a.Meta.ChunkShape[d] / a.chunk[d]
	}
	crcs := 0
	bigEnd := false
	for _, c := range a.shard.IndexCodecs {
		switch c.Name {
		case "crc32c":
			crcs++
		case "bytes":
			bigEnd = c.BigEndian
		}
	}
	ssize := sizeOf(sv)
	isize := n*16 + int64(4*crcs)
	if n > ssize/16 || isize > ssize {
		return nil, fmt.Errorf("zarr: %s: shard %s is %d bytes, too small for its index of %d entries", a.store, skey, ssize, n)
	}
	buf := make([]byte, isize)
	at := int64(0)
	if a.shard.IndexAtEnd {
		at = ssize - isize
	}
	if err := readFull(sv, buf, at); err != nil {
		return nil, fmt.Errorf("zarr: %s: shard %s: reading the index at offset %d: %w", a.store, skey, at, err)
	}
	for i := 0; i < crcs; i++ {
		l := len(buf) - 4
		want := binary.LittleEndian.Uint32(buf[l:])
		if got := crc32.Checksum(buf[:l], castagnoli); got != want {
			return nil, fmt.Errorf("zarr: %s: shard %s: index at offset %d: CRC-32C mismatch (stored %08x, computed %08x)", a.store, skey, at, want, got)
		}
		buf = buf[:l]
	}
	idx := make([]uint64, 2*n)
	for i := range idx {
		if bigEnd {
			idx[i] = binary.BigEndian.Uint64(buf[8*i:])
		} else {
			idx[i] = binary.LittleEndian.Uint64(buf[8*i:])
		}
	}
	return idx, nil
}

// decodeBytes undoes bytes→bytes codecs (listed in array→bytes order) on
// an encoded chunk; want is the decoded size (-1 when unknown). It returns
// a reader over the decoded bytes and the bytes it holds in memory.
func decodeBytes(v io.ReaderAt, codecs []Codec, want int64, key string) (io.ReaderAt, int64, error) {
	src := v
	size := sizeOf(v)
	for i := len(codecs) - 1; i >= 0; i-- {
		c := codecs[i]
		switch c.Name {
		case "crc32c":
			if size < 4 {
				return nil, 0, fmt.Errorf("chunk %s: %d bytes cannot hold a CRC-32C", key, size)
			}
			if err := checkCRC(src, size-4, key); err != nil {
				return nil, 0, err
			}
			size -= 4
			src = io.NewSectionReader(src, 0, size)
		case "zstd", "gzip", "zlib":
			sec := io.NewSectionReader(src, 0, size)
			if i > 0 || want < 0 || want <= smallChunk {
				// Decode whole: small, or more codecs follow.
				limit := want
				if i > 0 || want < 0 {
					limit = maxWholeDecode
				}
				exact := int64(-1)
				if i == 0 && want >= 0 {
					exact = want // at most smallChunk
				}
				b, err := decodeAll(sec, c.Name, limit, exact, size, key)
				if err != nil {
					return nil, 0, err
				}
				src, size = bytes.NewReader(b), int64(len(b))
				continue
			}
			return &stream{src: sec, codec: c.Name, size: want, key: key}, 0, nil
		default:
			return nil, 0, fmt.Errorf("chunk %s: codec %q cannot appear here", key, c.Name)
		}
	}
	if want >= 0 && size != want {
		return nil, 0, fmt.Errorf("chunk %s: %d bytes, want %d", key, size, want)
	}
	if r, ok := src.(*bytes.Reader); ok {
		return r, r.Size(), nil
	}
	return src, 0, nil
}

func checkCRC(r io.ReaderAt, n int64, key string) error {
	h := crc32.New(castagnoli)
	buf := make([]byte, min(n, crcPiece))
	for off := int64(0); off < n; {
		k := min(int64(len(buf)), n-off)
		if err := readFull(r, buf[:k], off); err != nil {
			return fmt.Errorf("chunk %s: %w", key, err)
		}
		h.Write(buf[:k])
		off += k
	}
	var tail [4]byte
	if err := readFull(r, tail[:], n); err != nil {
		return fmt.Errorf("chunk %s: %w", key, err)
	}
	if want, got := binary.LittleEndian.Uint32(tail[:]), h.Sum32(); want != got {
		return fmt.Errorf("chunk %s: CRC-32C mismatch at offset %d (stored %08x, computed %08x)", key, n, want, got)
	}
	return nil
}

// zstdDecoders recycles zstd decoders: a new one allocates its history
// buffers (the size of the frame's window, often the whole chunk), which
// for a model of thousands of chunks is most of the reader's garbage.
var zstdDecoders sync.Pool

// pooledZstd is a zstd decoder that goes back to the pool when closed.
type pooledZstd struct{ *zstd.Decoder }

func (p pooledZstd) Close() error {
	if p.Decoder.Reset(nil) == nil { // drops the reference to the source
		zstdDecoders.Put(p.Decoder)
	} else {
		p.Decoder.Close()
	}
	return nil
}

func newDecompressor(codec string, r io.Reader) (io.ReadCloser, error) {
	switch codec {
	case "zstd":
		if d, ok := zstdDecoders.Get().(*zstd.Decoder); ok {
			if err := d.Reset(r); err == nil {
				return pooledZstd{d}, nil
			}
			d.Close()
		}
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, err
		}
		return pooledZstd{d}, nil
	case "gzip":
		return gzip.NewReader(r)
	case "zlib":
		return zlib.NewReader(r)
	}
	return nil, fmt.Errorf("unknown compressor %q", codec)
}

// decodeAll decompresses a whole value, failing past limit bytes. When
// the decoded size is known (exact >= 0, bounded by smallChunk) the
// result is read into a buffer of that capacity: growing a bytes.Buffer
// instead leaves up to twice the bytes the chunk cache accounts for, and
// a trail of garbage that inflates the heap. As exact comes from the
// metadata, the buffer starts in proportion to the encoded size (encSize)
// and grows to exact only once decoded data has filled it.
func decodeAll(r io.Reader, codec string, limit, exact, encSize int64, key string) ([]byte, error) {
	d, err := newDecompressor(codec, r)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %s: %w", key, codec, err)
	}
	defer d.Close()
	if exact >= 0 && exact <= limit {
		b := make([]byte, 0, min(exact, 1<<20+8*max(encSize, 0)))
		for int64(len(b)) < exact {
			if len(b) == cap(b) {
				b = slices.Grow(b, int(exact)-len(b))
			}
			n, err := d.Read(b[len(b):min(int64(cap(b)), exact)])
			b = b[:len(b)+n]
			if err == io.EOF {
				return b, nil // short: the caller reports the size mismatch
			}
			if err != nil {
				return nil, fmt.Errorf("chunk %s: %s: after %d decoded bytes: %w", key, codec, len(b), err)
			}
		}
		var one [1]byte
		if m, err := io.ReadFull(d, one[:]); m > 0 {
			return nil, fmt.Errorf("chunk %s: %s: decodes to more than %d bytes", key, codec, limit)
		} else if err != io.EOF {
			return nil, fmt.Errorf("chunk %s: %s: after %d decoded bytes: %w", key, codec, len(b), err)
		}
		return b, nil
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(d, limit+1))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %s: after %d decoded bytes: %w", key, codec, n, err)
	}
	if n > limit {
		return nil, fmt.Errorf("chunk %s: %s: decodes to more than %d bytes", key, codec, limit)
	}
	return buf.Bytes(), nil
}

// stream serves reads from a compressed chunk by decoding forward from
// the start, keeping the decoder's position so that sequential reads
// (the common case) decode the chunk once; a backward read restarts.
type stream struct {
	src   *io.SectionReader
	codec string
	size  int64
	key   string

	mu  sync.Mutex
	dec io.ReadCloser
	pos int64
}

// ReadAt decodes forward to off (restarting for a backward read).
func (s *stream) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < 0 || off > s.size {
		return 0, fmt.Errorf("chunk %s: offset %d outside %d decoded bytes", s.key, off, s.size)
	}
	want := p
	if int64(len(p)) > s.size-off {
		want = p[:s.size-off]
	}
	if s.dec == nil || off < s.pos {
		s.closeLocked()
		d, err := newDecompressor(s.codec, io.NewSectionReader(s.src, 0, s.src.Size()))
		if err != nil {
			return 0, fmt.Errorf("chunk %s: %s: %w", s.key, s.codec, err)
		}
		s.dec, s.pos = d, 0
	}
	if off > s.pos {
		n, err := io.CopyN(io.Discard, s.dec, off-s.pos)
		s.pos += n
		if err != nil {
			s.closeLocked()
			return 0, fmt.Errorf("chunk %s: %s: decoded %d of %d bytes: %w", s.key, s.codec, s.pos, s.size, unexpected(err))
		}
	}
	n, err := io.ReadFull(s.dec, want)
	s.pos += int64(n)
	if err != nil {
		s.closeLocked()
		return n, fmt.Errorf("chunk %s: %s: decoded %d of %d bytes: %w", s.key, s.codec, s.pos, s.size, unexpected(err))
	}
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (s *stream) closeLocked() {
	if s.dec != nil {
		s.dec.Close()
		s.dec = nil
	}
}

func (s *stream) close() {
	s.mu.Lock()
	s.closeLocked()
	s.mu.Unlock()
}

// chunkCache keeps recently decoded chunks (by bytes) and open streams
// (by count) for all arrays, so memory stays bounded however many arrays
// a model has.
type chunkCache struct {
	mu      sync.Mutex
	lru     *list.List // of *cacheEntry, front = most recent
	entries map[cacheKey]*list.Element
	bytes   int64
	streams int
}

type cacheKey struct {
	a   *Array
	key string
}

type cacheEntry struct {
	k     cacheKey
	r     io.ReaderAt // nil: absent chunk
	bytes int64
	ready chan struct{}
	err   error
}

var cache = &chunkCache{lru: list.New(), entries: map[cacheKey]*list.Element{}}

// get returns the cached reader for (a, key) or loads it; loads of the
// same key wait for one another.
func (c *chunkCache) get(a *Array, key string, load func() (io.ReaderAt, int64, error)) (io.ReaderAt, error) {
	k := cacheKey{a, key}
	c.mu.Lock()
	if el, ok := c.entries[k]; ok {
		c.lru.MoveToFront(el)
		e := el.Value.(*cacheEntry)
		c.mu.Unlock()
		<-e.ready
		return e.r, e.err
	}
	e := &cacheEntry{k: k, ready: make(chan struct{})}
	c.entries[k] = c.lru.PushFront(e)
	c.mu.Unlock()

	e.r, e.bytes, e.err = load()
	close(e.ready)

	c.mu.Lock()
	defer c.mu.Unlock()
	if e.err != nil {
		if el, ok := c.entries[k]; ok && el.Value == e {
			c.lru.Remove(el)
			delete(c.entries, k)
		}
		return nil, e.err
	}
	c.bytes += e.bytes
	if _, ok := e.r.(*stream); ok {
		c.streams++
	}
	c.evictLocked(e)
	return e.r, nil
}

func (c *chunkCache) evictLocked(keep *cacheEntry) {
	for el := c.lru.Back(); el != nil && (c.bytes > cacheBudget || c.streams > maxOpenStreams || c.lru.Len() > maxEntries); {
		prev := el.Prev()
		e := el.Value.(*cacheEntry)
		select {
		case <-e.ready:
		default:
			el = prev
			continue // still loading
		}
		if e != keep {
			c.removeLocked(el)
		}
		el = prev
	}
}

func (c *chunkCache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.entries, e.k)
	c.bytes -= e.bytes
	if s, ok := e.r.(*stream); ok {
		c.streams--
		// Readers holding s keep working: a closed stream reopens itself.
		s.close()
	}
}

// Release drops the array's decoded chunks from the shared cache.
func (a *Array) Release() {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	for el := cache.lru.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*cacheEntry)
		if e.k.a == a {
			select {
			case <-e.ready:
				cache.removeLocked(el)
			default:
			}
		}
		el = next
	}
}

// Size is the decoded length.
func (s *stream) Size() int64 { return s.size }

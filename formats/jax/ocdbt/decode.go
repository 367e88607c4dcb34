package ocdbt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Magic values and limits of the OCDBT on-disk format (tensorstore
// kvstore/ocdbt/format).
const (
	manifestMagic    = 0x0cdb3a2a
	versionNodeMagic = 0x0cdb1234
	btreeNodeMagic   = 0x0cdb20de

	maxFormatVersion = 0       // the only version tensorstore writes and reads
	maxPathLength    = 65535   // data file paths
	maxKeyLength     = 65535   // keys
	maxNodeArity     = 1 << 20 // entries per B+tree node
	maxArityLog2     = 16      // version tree arity

	// Decompressed size limits: tensorstore's default max_decoded_node_bytes
	// is 8 MiB; we accept up to 64 MiB so that tuned databases still open,
	// while a hostile frame header cannot make us allocate more.
	maxDecodedNodeBytes     = 64 << 20
	maxDecodedManifestBytes = 16 << 20

	// maxExpandedBytes bounds the keys (or paths) of one node after prefix
	// decompression: prefix compression lets a few bytes stand for a 64 KiB
	// key, so the encoded size alone does not bound memory.
	maxExpandedBytes = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrChecksum is wrapped by errors about a CRC-32C mismatch.
var ErrChecksum = errors.New("CRC-32C checksum mismatch")

// FormatError is a decoding error with its location: the file (relative to
// the database root), the byte offset of the encoded object in it, and the
// offset within the object (of the decompressed body when Compressed).
type FormatError struct {
	File       string
	FileOffset int64
	Object     string // "manifest", "B+tree node", "version tree node"
	Offset     int64  // within the object or its decompressed body
	Compressed bool
	Err        error
}

// Error formats the location and cause.
func (e *FormatError) Error() string {
	where := "byte"
	if e.Compressed {
		where = "decompressed body byte"
	}
	return fmt.Sprintf("ocdbt: %s: %s at file offset %d: %s %d: %v", e.File, e.Object, e.FileOffset, where, e.Offset, e.Err)
}

// Unwrap returns the cause.
func (e *FormatError) Unwrap() error { return e.Err }

// reader decodes the little-endian and varint fields of an OCDBT object.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) remaining() int { return len(r.b) - r.pos }

func (r *reader) byte() uint8 {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.fail("unexpected end of data")
		return 0
	}
	v := r.b[r.pos]
	r.pos++
	return v
}

func (r *reader) varint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.pos:])
	if n <= 0 {
		if n == 0 {
			r.fail("unexpected end of data in varint")
		} else {
			r.fail("varint overflows 64 bits")
		}
		return 0
	}
	r.pos += n
	return v
}

// varint32 reads a varint that must fit max.
func (r *reader) varintMax(what string, max uint64) uint64 {
	p := r.pos
	v := r.varint()
	if r.err == nil && v > max {
		r.pos = p
		r.fail("%s = %d exceeds the limit %d", what, v, max)
		return 0
	}
	return v
}

func (r *reader) u32le() uint32 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 4 {
		r.fail("unexpected end of data")
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.pos:])
	r.pos += 4
	return v
}

func (r *reader) u64le() uint64 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 8 {
		r.fail("unexpected end of data")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b[r.pos:])
	r.pos += 8
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(r.remaining()) {
		r.fail("%d bytes needed, %d left", n, r.remaining())
		return nil
	}
	v := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return v
}

// count reads an entry count and checks it against the bytes left, each
// entry taking at least minBytes, so a hostile count cannot size an
// allocation beyond the object's own length.
func (r *reader) count(what string, max uint64, minBytes int) int {
	p := r.pos
	n := r.varintMax(what, max)
	if r.err == nil && minBytes > 0 && n > uint64(r.remaining()/minBytes) {
		r.pos = p
		r.fail("%s = %d needs at least %d bytes, %d left", what, n, n*uint64(minBytes), r.remaining())
		return 0
	}
	return int(n)
}

var (
	zstdOnce sync.Once
	zstdNode *zstd.Decoder
	zstdMan  *zstd.Decoder
	zstdErr  error
)

func decoders() (*zstd.Decoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		zstdNode, zstdErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecodedNodeBytes))
		if zstdErr == nil {
			zstdMan, zstdErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecodedManifestBytes))
		}
	})
	return zstdNode, zstdMan, zstdErr
}

// envelope checks the outer framing every OCDBT object shares — magic
// (big-endian), total length (little-endian), varint version, varint
// compression, body, CRC-32C footer over everything before it — and
// returns the (decompressed) body and whether it was compressed.
func envelope(data []byte, magic uint32, obj, file string, fileOff int64) ([]byte, bool, error) {
	ferr := func(off int64, compressed bool, err error) error {
		return &FormatError{File: file, FileOffset: fileOff, Object: obj, Offset: off, Compressed: compressed, Err: err}
	}
	const minLen = 4 + 8 + 1 + 1 + 4
	if len(data) < minLen {
		return nil, false, ferr(0, false, fmt.Errorf("%d bytes is shorter than the minimum %d", len(data), minLen))
	}
	if m := binary.BigEndian.Uint32(data); m != magic {
		return nil, false, ferr(0, false, fmt.Errorf("magic %08x, want %08x", m, magic))
	}
	if l := binary.LittleEndian.Uint64(data[4:]); l != uint64(len(data)) {
		return nil, false, ferr(4, false, fmt.Errorf("header length %d does not match the stored length %d", l, len(data)))
	}
	n := len(data) - 4
	want := binary.LittleEndian.Uint32(data[n:])
	if got := crc32.Checksum(data[:n], castagnoli); got != want {
		return nil, false, ferr(int64(n), false, fmt.Errorf("%w: stored %08x, computed %08x", ErrChecksum, want, got))
	}
	r := &reader{b: data[:n], pos: 12}
	version := r.varint()
	if r.err == nil && version > maxFormatVersion {
		r.fail("format version %d is newer than the supported %d", version, maxFormatVersion)
	}
	comp := r.varint()
	if r.err != nil {
		return nil, false, ferr(int64(r.pos), false, r.err)
	}
	switch comp {
	case 0:
		return data[r.pos:n], false, nil
	case 1:
		dn, dm, err := decoders()
		if err != nil {
			return nil, false, err
		}
		d := dn
		if magic == manifestMagic {
			d = dm
		}
		out, err := d.DecodeAll(data[r.pos:n], nil)
		if err != nil {
			return nil, false, ferr(int64(r.pos), false, fmt.Errorf("zstd: %w", err))
		}
		return out, true, nil
	default:
		return nil, false, ferr(int64(r.pos-1), false, fmt.Errorf("unknown compression format %d", comp))
	}
}

// DataFileID names a data file relative to the database root: the full
// path is BasePath + RelativePath. BasePath carries the transitive path of
// the node that referenced the file, which children inherit.
type DataFileID struct {
	BasePath     string
	RelativePath string
}

// Path is the file's path relative to the database root.
func (d DataFileID) Path() string { return d.BasePath + d.RelativePath }

// Ref locates an encoded node or an out-of-line value: Length bytes at
// Offset in File.
type Ref struct {
	File   DataFileID
	Offset uint64
	Length uint64
}

// Missing reports whether the reference is the "no root" marker of an
// empty tree (offset and length both all ones).
func (r Ref) Missing() bool { return r.Offset == math.MaxUint64 && r.Length == math.MaxUint64 }

// String renders the reference as path[offset:+length].
func (r Ref) String() string {
	return fmt.Sprintf("%s[%d:+%d]", r.File.Path(), r.Offset, r.Length)
}

// readDataFileTable decodes a prefix-compressed table of data file paths.
func readDataFileTable(r *reader, transitive string) []DataFileID {
	maxLen := uint64(maxPathLength - len(transitive))
	n := r.count("data file count", math.MaxUint32, 2)
	if r.err != nil {
		return nil
	}
	prefix := make([]uint64, n)
	suffix := make([]uint64, n)
	base := make([]uint64, n)
	for i := 1; i < n; i++ {
		prefix[i] = r.varintMax("path prefix length", maxPathLength)
	}
	for i := 0; i < n; i++ {
		suffix[i] = r.varintMax("path suffix length", maxPathLength)
	}
	var prevBase uint64
	for i := 0; i < n; i++ {
		base[i] = r.varintMax("base path length", maxPathLength)
		if r.err != nil {
			return nil
		}
		total := prefix[i] + suffix[i]
		if total > maxLen {
			r.fail("data file %d: path length %d exceeds %d", i, total, maxLen)
			return nil
		}
		if base[i] > total {
			r.fail("data file %d: base path length %d exceeds path length %d", i, base[i], total)
			return nil
		}
		if prefix[i] > min(prevBase, base[i]) && base[i] != prevBase {
			r.fail("data file %d: shared prefix %d crosses a base path boundary", i, prefix[i])
			return nil
		}
		prevBase = base[i]
	}
	files := make([]DataFileID, n)
	var prev string // previous full path (without transitive part)
	expanded := 0
	for i := 0; i < n; i++ {
		if expanded += int(prefix[i]+suffix[i]) + len(transitive); expanded > maxExpandedBytes {
			r.fail("data file paths expand to more than %d bytes", maxExpandedBytes)
			return nil
		}
		if prefix[i] > uint64(len(prev)) {
			r.fail("data file %d: shared prefix %d exceeds the previous path length %d", i, prefix[i], len(prev))
			return nil
		}
		s := r.bytes(suffix[i])
		if r.err != nil {
			return nil
		}
		full := prev[:prefix[i]] + string(s)
		files[i] = DataFileID{BasePath: transitive + full[:base[i]], RelativePath: full[base[i]:]}
		prev = full
	}
	return files
}

func readFileID(r *reader, table []DataFileID) DataFileID {
	i := r.varint()
	if r.err == nil && i >= uint64(len(table)) {
		r.fail("data file id %d outside the table of %d", i, len(table))
	}
	if r.err != nil {
		return DataFileID{}
	}
	return table[i]
}

// Config is the database configuration stored in the manifest.
type Config struct {
	UUID                 [16]byte
	ManifestKind         uint8 // 0 single file, 1 numbered manifests
	MaxInlineValueBytes  uint32
	MaxDecodedNodeBytes  uint32
	VersionTreeArityLog2 uint8
	Compression          uint32 // 0 none, 1 zstd
	ZstdLevel            int32
}

// Version is one B+tree root that the version tree references.
type Version struct {
	Generation            uint64
	RootHeight            uint8
	Root                  Ref
	NumKeys               uint64
	NumTreeBytes          uint64
	NumIndirectValueBytes uint64
	CommitTimeMillis      uint64
}

// VersionNodeRef references an interior version tree node (older versions).
type VersionNodeRef struct {
	Generation     uint64
	Ref            Ref
	NumGenerations uint64
	CommitTime     uint64
	Height         uint8
}

// Manifest is a decoded manifest.ocdbt.
type Manifest struct {
	Config       Config
	Versions     []Version
	VersionNodes []VersionNodeRef
}

// Latest returns the newest version.
func (m *Manifest) Latest() Version { return m.Versions[len(m.Versions)-1] }

func readConfig(r *reader) Config {
	var c Config
	copy(c.UUID[:], r.bytes(16))
	c.ManifestKind = r.byte()
	if r.err == nil && c.ManifestKind > 1 {
		r.fail("manifest kind %d is unknown", c.ManifestKind)
	}
	c.MaxInlineValueBytes = uint32(r.varintMax("max_inline_value_bytes", math.MaxUint32))
	c.MaxDecodedNodeBytes = uint32(r.varintMax("max_decoded_node_bytes", math.MaxUint32))
	c.VersionTreeArityLog2 = r.byte()
	if r.err == nil && (c.VersionTreeArityLog2 == 0 || c.VersionTreeArityLog2 > maxArityLog2) {
		r.fail("version_tree_arity_log2 %d outside [1, %d]", c.VersionTreeArityLog2, maxArityLog2)
	}
	c.Compression = uint32(r.varintMax("compression method", math.MaxUint32))
	switch c.Compression {
	case 0:
	case 1:
		c.ZstdLevel = int32(r.u32le())
	default:
		r.fail("compression method %d is unknown", c.Compression)
	}
	return c
}

// readVersionLeafEntries decodes the leaf entry columns shared by the
// manifest's inline versions and version tree leaf nodes.
func readVersionLeafEntries(r *reader, table []DataFileID, arityLog2 uint8) []Version {
	n := r.count("version count", 1<<arityLog2, 1)
	if r.err != nil {
		return nil
	}
	if n == 0 {
		r.fail("no versions")
		return nil
	}
	vs := make([]Version, n)
	for i := range vs {
		vs[i].Generation = r.varint()
	}
	for i := range vs {
		vs[i].RootHeight = r.byte()
	}
	for i := range vs {
		vs[i].Root.File = readFileID(r, table)
	}
	for i := range vs {
		vs[i].Root.Offset = r.varint()
	}
	for i := range vs {
		vs[i].Root.Length = r.varint()
	}
	for i := range vs {
		vs[i].NumKeys = r.varint()
	}
	for i := range vs {
		vs[i].NumTreeBytes = r.varint()
	}
	for i := range vs {
		vs[i].NumIndirectValueBytes = r.varint()
	}
	for i := range vs {
		vs[i].CommitTimeMillis = r.u64le()
	}
	if r.err != nil {
		return nil
	}
	for i, v := range vs {
		if v.Generation == 0 {
			r.fail("version %d: generation number 0", i)
		} else if i > 0 && v.Generation <= vs[i-1].Generation {
			r.fail("version %d: generation %d not after %d", i, v.Generation, vs[i-1].Generation)
		}
		if !v.Root.Missing() && v.Root.Offset+v.Root.Length < v.Root.Offset {
			r.fail("version %d: root offset %d + length %d overflows", i, v.Root.Offset, v.Root.Length)
		}
	}
	return vs
}

func readVersionInteriorEntries(r *reader, table []DataFileID, max uint64, withHeight bool) []VersionNodeRef {
	n := r.count("version node count", max, 1)
	if r.err != nil {
		return nil
	}
	vs := make([]VersionNodeRef, n)
	for i := range vs {
		vs[i].Generation = r.varint()
	}
	for i := range vs {
		vs[i].Ref.File = readFileID(r, table)
	}
	for i := range vs {
		vs[i].Ref.Offset = r.varint()
	}
	for i := range vs {
		vs[i].Ref.Length = r.varint()
	}
	for i := range vs {
		vs[i].NumGenerations = r.varint()
	}
	for i := range vs {
		vs[i].CommitTime = r.u64le()
	}
	if withHeight {
		for i := range vs {
			vs[i].Height = r.byte()
		}
	}
	return vs
}

// DecodeManifest decodes an encoded manifest; file names it in errors. A
// numbered-kind manifest holds only the config (Versions is empty).
func DecodeManifest(data []byte, file string) (*Manifest, error) {
	body, comp, err := envelope(data, manifestMagic, "manifest", file, 0)
	if err != nil {
		return nil, err
	}
	r := &reader{b: body}
	m := &Manifest{Config: readConfig(r)}
	if r.err == nil && m.Config.ManifestKind == 0 {
		table := readDataFileTable(r, "")
		m.Versions = readVersionLeafEntries(r, table, m.Config.VersionTreeArityLog2)
		m.VersionNodes = readVersionInteriorEntries(r, table, 64/uint64(max(m.Config.VersionTreeArityLog2, 1)), true)
	}
	if r.err == nil && r.remaining() != 0 {
		r.fail("%d trailing bytes", r.remaining())
	}
	if r.err != nil {
		return nil, &FormatError{File: file, Object: "manifest", Offset: int64(r.pos), Compressed: comp, Err: r.err}
	}
	return m, nil
}

// node is a decoded B+tree node. Keys are relative to the prefix that the
// path from the root accumulated.
type node struct {
	height uint8
	keys   []string
	// leaf entries
	inline [][]byte // nil entry for out-of-line values
	values []Ref    // out-of-line value locations (Length = value size)
	// interior entries
	subtreePrefix []int
	children      []Ref
}

// decodeNode decodes an encoded B+tree node read from ref; base is the
// transitive path the node's data file table is relative to.
func decodeNode(data []byte, ref Ref) (*node, error) {
	file := ref.File.Path()
	body, comp, err := envelope(data, btreeNodeMagic, "B+tree node", file, int64(ref.Offset))
	if err != nil {
		return nil, err
	}
	r := &reader{b: body}
	nd := readNodeBody(r, ref.File.BasePath)
	if r.err == nil && r.remaining() != 0 {
		r.fail("%d trailing bytes", r.remaining())
	}
	if r.err != nil {
		return nil, &FormatError{File: file, FileOffset: int64(ref.Offset), Object: "B+tree node", Offset: int64(r.pos), Compressed: comp, Err: r.err}
	}
	return nd, nil
}

func readNodeBody(r *reader, base string) *node {
	nd := &node{height: r.byte()}
	table := readDataFileTable(r, base)
	n := r.count("entry count", maxNodeArity, 2)
	if r.err != nil {
		return nil
	}
	if n == 0 {
		r.fail("empty B+tree node")
		return nil
	}
	prefix := make([]uint64, n)
	suffix := make([]uint64, n)
	for i := 1; i < n; i++ {
		prefix[i] = r.varintMax("key prefix length", maxKeyLength)
	}
	for i := 0; i < n; i++ {
		suffix[i] = r.varintMax("key suffix length", maxKeyLength)
	}
	interior := nd.height > 0
	if interior {
		nd.subtreePrefix = make([]int, n)
		for i := range nd.subtreePrefix {
			nd.subtreePrefix[i] = int(r.varintMax("subtree common prefix length", maxKeyLength))
		}
	}
	if r.err != nil {
		return nil
	}
	nd.keys = make([]string, n)
	var prev string
	expanded := 0
	for i := 0; i < n; i++ {
		if expanded += int(prefix[i] + suffix[i]); expanded > maxExpandedBytes {
			r.fail("keys expand to more than %d bytes", maxExpandedBytes)
			return nil
		}
		if prefix[i] > uint64(len(prev)) {
			r.fail("key %d: prefix length %d exceeds the previous key length %d", i, prefix[i], len(prev))
			return nil
		}
		if prefix[i]+suffix[i] > maxKeyLength {
			r.fail("key %d: length %d exceeds %d", i, prefix[i]+suffix[i], maxKeyLength)
			return nil
		}
		s := r.bytes(suffix[i])
		if r.err != nil {
			return nil
		}
		k := prev[:prefix[i]] + string(s)
		if i > 0 && k <= prev {
			r.fail("key %d: %q does not sort after %q", i, k, prev)
			return nil
		}
		if interior && nd.subtreePrefix[i] > len(k) {
			r.fail("key %d: subtree common prefix %d exceeds key length %d", i, nd.subtreePrefix[i], len(k))
			return nil
		}
		nd.keys[i] = k
		prev = k
	}
	if interior {
		nd.children = make([]Ref, n)
		for i := range nd.children {
			nd.children[i].File = readFileID(r, table)
		}
		for i := range nd.children {
			nd.children[i].Offset = r.varint()
		}
		for i := range nd.children {
			nd.children[i].Length = r.varint()
		}
		for k := 0; k < 3; k++ { // num_keys, num_tree_bytes, num_indirect_value_bytes
			for i := 0; i < n; i++ {
				r.varint()
			}
		}
		for i, c := range nd.children {
			if c.Offset+c.Length < c.Offset {
				r.fail("child %d: offset %d + length %d overflows", i, c.Offset, c.Length)
			}
		}
		return nd
	}
	lengths := make([]uint64, n)
	for i := range lengths {
		lengths[i] = r.varint()
	}
	kinds := make([]uint8, n)
	for i := range kinds {
		kinds[i] = r.byte()
		if r.err == nil && kinds[i] > 1 {
			r.fail("value kind %d of entry %d is neither inline (0) nor out-of-line (1)", kinds[i], i)
		}
	}
	if r.err != nil {
		return nil
	}
	nd.inline = make([][]byte, n)
	nd.values = make([]Ref, n)
	for i := range kinds {
		if kinds[i] == 1 {
			nd.values[i].File = readFileID(r, table)
			nd.values[i].Length = lengths[i]
		}
	}
	for i := range kinds {
		if kinds[i] == 1 {
			nd.values[i].Offset = r.varint()
			if r.err == nil && (nd.values[i].Offset+lengths[i] < nd.values[i].Offset || nd.values[i].Offset+lengths[i] > math.MaxInt64) {
				r.fail("value %d: offset %d + length %d overflows", i, nd.values[i].Offset, lengths[i])
			}
		}
	}
	for i := range kinds {
		if kinds[i] == 0 {
			b := r.bytes(lengths[i])
			if b == nil && r.err == nil {
				b = []byte{}
			}
			nd.inline[i] = b
		}
	}
	return nd
}

// DecodeVersionNode decodes a version tree node (used to validate older
// versions; reading the latest version never needs one).
func DecodeVersionNode(data []byte, ref Ref) (height uint8, leaves []Version, interior []VersionNodeRef, err error) {
	file := ref.File.Path()
	body, comp, err := envelope(data, versionNodeMagic, "version tree node", file, int64(ref.Offset))
	if err != nil {
		return 0, nil, nil, err
	}
	r := &reader{b: body}
	arity := r.byte()
	if r.err == nil && (arity == 0 || arity > maxArityLog2) {
		r.fail("version_tree_arity_log2 %d outside [1, %d]", arity, maxArityLog2)
	}
	height = r.byte()
	if r.err == nil && int(height)*int(arity) >= 64 {
		r.fail("height %d too large for arity 2^%d", height, arity)
	}
	table := readDataFileTable(r, ref.File.BasePath)
	if r.err == nil {
		if height == 0 {
			leaves = readVersionLeafEntries(r, table, arity)
		} else {
			interior = readVersionInteriorEntries(r, table, 1<<arity, false)
		}
	}
	if r.err == nil && r.remaining() != 0 {
		r.fail("%d trailing bytes", r.remaining())
	}
	if r.err != nil {
		return 0, nil, nil, &FormatError{File: file, FileOffset: int64(ref.Offset), Object: "version tree node", Offset: int64(r.pos), Compressed: comp, Err: r.err}
	}
	return height, leaves, interior, nil
}

// readFull reads exactly len(p) bytes at off, turning a short read into
// io.ErrUnexpectedEOF.
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

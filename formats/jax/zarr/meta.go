// Package zarr reads zarr v2 and v3 arrays as tensorstore writes them for
// Orbax: metadata (.zarray / zarr.json), the regular chunk grid, C/F order,
// the zstd/gzip/zlib compressors, v3's bytes/transpose/crc32c/zstd/gzip
// codecs and the sharding_indexed codec Orbax uses with zarr3, and fill
// values for absent chunks. Chunks come from a Store: a plain directory or
// an OCDBT database. An Array is an io.ReaderAt over its elements in C
// order, little-endian, decoded lazily chunk by chunk.
package zarr

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/x448/float16"
)

// Limits applied to metadata so that hostile files cannot request
// absurd work: tensorstore's own maximum rank is 32.
const (
	maxRank = 32
	// maxChunkElems bounds one chunk (and one shard) so element offsets fit
	// comfortably in int64.
	maxChunkElems = 1 << 48
)

// Kind is an element kind.
type Kind byte

// Element kinds.
const (
	Bool     Kind = 'b'
	Int      Kind = 'i'
	Uint     Kind = 'u'
	Float    Kind = 'f'
	BFloat16 Kind = 'B' // bfloat16: float32's top 16 bits
	Complex  Kind = 'c'
	Raw      Kind = 'V' // opaque bytes ("|V2", "r16")
)

// DType is an array's element type.
type DType struct {
	// Name is the type as the metadata spells it ("<f4", "bfloat16", "int32").
	Name string
	Kind Kind
	// Size is the element size in bytes.
	Size int
	// BigEndian is set for multi-byte types stored most significant byte first.
	BigEndian bool
}

// String is the canonical NumPy-style name: "float32", "bfloat16", "int8".
func (d DType) String() string {
	switch d.Kind {
	case Bool:
		return "bool"
	case Int:
		return fmt.Sprintf("int%d", 8*d.Size)
	case Uint:
		return fmt.Sprintf("uint%d", 8*d.Size)
	case Float:
		return fmt.Sprintf("float%d", 8*d.Size)
	case BFloat16:
		return "bfloat16"
	case Complex:
		return fmt.Sprintf("complex%d", 8*d.Size)
	}
	return fmt.Sprintf("V%d", d.Size)
}

// ParseDTypeV2 parses a zarr v2 "dtype" string: a NumPy type string such
// as "<f4", "|i1", ">u2", or "bfloat16" (tensorstore's extension).
func ParseDTypeV2(s string) (DType, error) {
	if s == "bfloat16" {
		return DType{Name: s, Kind: BFloat16, Size: 2}, nil
	}
	if len(s) < 3 {
		return DType{}, fmt.Errorf("unsupported zarr dtype %q", s)
	}
	endian, kind, num := s[0], s[1], s[2:]
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > 1<<16 {
		return DType{}, fmt.Errorf("unsupported zarr dtype %q", s)
	}
	if endian != '<' && endian != '>' && endian != '|' {
		return DType{}, fmt.Errorf("zarr dtype %q: byte order %q is not <, > or |", s, endian)
	}
	d := DType{Name: s, Size: n, BigEndian: endian == '>' && n > 1}
	ok := false
	switch kind {
	case 'b':
		d.Kind, ok = Bool, n == 1
	case 'i':
		d.Kind, ok = Int, n == 1 || n == 2 || n == 4 || n == 8
	case 'u':
		d.Kind, ok = Uint, n == 1 || n == 2 || n == 4 || n == 8
	case 'f':
		d.Kind, ok = Float, n == 2 || n == 4 || n == 8
	case 'c':
		d.Kind, ok = Complex, n == 8 || n == 16
	case 'V':
		d.Kind, ok, d.BigEndian = Raw, true, false
	}
	if !ok {
		return DType{}, fmt.Errorf("unsupported zarr dtype %q", s)
	}
	if d.Size > 1 && endian == '|' && d.Kind != Raw {
		return DType{}, fmt.Errorf("zarr dtype %q: multi-byte type without byte order", s)
	}
	return d, nil
}

// ParseDTypeV3 parses a zarr v3 "data_type" name.
func ParseDTypeV3(s string) (DType, error) {
	d := DType{Name: s}
	switch s {
	case "bool":
		d.Kind, d.Size = Bool, 1
	case "int8", "int16", "int32", "int64":
		d.Kind = Int
	case "uint8", "uint16", "uint32", "uint64":
		d.Kind = Uint
	case "float16", "float32", "float64":
		d.Kind = Float
	case "bfloat16":
		d.Kind, d.Size = BFloat16, 2
	case "complex64", "complex128":
		d.Kind = Complex
	default:
		if bits, ok := strings.CutPrefix(s, "r"); ok {
			n, err := strconv.Atoi(bits)
			if err == nil && n > 0 && n%8 == 0 && n <= 1<<19 {
				return DType{Name: s, Kind: Raw, Size: n / 8}, nil
			}
		}
		return DType{}, fmt.Errorf("unsupported zarr v3 data_type %q", s)
	}
	if d.Size == 0 {
		digits := strings.TrimLeft(s, "abcdefghijklmnopqrstuvwxyz")
		n, _ := strconv.Atoi(digits)
		d.Size = n / 8
	}
	return d, nil
}

// Codec is one stage of a chunk's encoding, outermost (applied last when
// writing) at the end of Metadata.Codecs.
type Codec struct {
	// Name: "bytes", "transpose", "zstd", "gzip", "zlib", "crc32c",
	// "sharding_indexed".
	Name string
	// BigEndian for "bytes".
	BigEndian bool
	// Order is the permutation for "transpose": stored dimension i is
	// array dimension Order[i].
	Order []int
	// Sharding configuration.
	Shard *Sharding
}

// Sharding is the configuration of a sharding_indexed codec: each chunk
// of the outer grid (a shard) holds a grid of inner chunks and an index of
// (offset, length) pairs.
type Sharding struct {
	ChunkShape  []int64
	Codecs      []Codec // inner chunk codecs, array→bytes order
	IndexCodecs []Codec
	IndexAtEnd  bool
}

// Metadata is an array's parsed metadata.
type Metadata struct {
	ZarrFormat int
	Shape      []int64
	ChunkShape []int64
	DType      DType
	// Fill is one element, little-endian, used for absent chunks.
	Fill []byte
	// Codecs in array→bytes order (the order zarr v3 lists them); the
	// v2 order, filters and compressor are translated into this chain.
	Codecs []Codec
	// separator and v2-style keys choose chunk key names.
	separator string
	v2Keys    bool
}

// ChunkKey returns the key of the chunk at grid position idx, relative to
// the array's own prefix.
func (m *Metadata) ChunkKey(idx []int64) string {
	var b strings.Builder
	if !m.v2Keys {
		b.WriteString("c")
		for _, i := range idx {
			b.WriteString(m.separator)
			b.WriteString(strconv.FormatInt(i, 10))
		}
		return b.String()
	}
	if len(idx) == 0 {
		return "0"
	}
	for k, i := range idx {
		if k > 0 {
			b.WriteString(m.separator)
		}
		b.WriteString(strconv.FormatInt(i, 10))
	}
	return b.String()
}

// NumElements is the product of Shape.
func (m *Metadata) NumElements() int64 {
	n := int64(1)
	for _, d := range m.Shape {
		n *= d
	}
	return n
}

type v2Meta struct {
	ZarrFormat         *int             `json:"zarr_format"`
	Shape              []int64          `json:"shape"`
	Chunks             []int64          `json:"chunks"`
	DType              json.RawMessage  `json:"dtype"`
	Compressor         *json.RawMessage `json:"compressor"`
	FillValue          json.RawMessage  `json:"fill_value"`
	Order              string           `json:"order"`
	Filters            json.RawMessage  `json:"filters"`
	DimensionSeparator string           `json:"dimension_separator"`
}

// ParseV2 parses a zarr v2 .zarray document.
func ParseV2(data []byte) (*Metadata, error) {
	var v v2Meta
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf(".zarray: %w", err)
	}
	if v.ZarrFormat == nil || *v.ZarrFormat != 2 {
		return nil, errors.New(".zarray: zarr_format is not 2")
	}
	m := &Metadata{ZarrFormat: 2, Shape: v.Shape, ChunkShape: v.Chunks, v2Keys: true, separator: "."}
	var dts string
	if err := json.Unmarshal(v.DType, &dts); err != nil {
		return nil, fmt.Errorf(".zarray: dtype %s is not a single type (structured dtypes are not supported)", trunc(v.DType))
	}
	var err error
	if m.DType, err = ParseDTypeV2(dts); err != nil {
		return nil, fmt.Errorf(".zarray: %w", err)
	}
	if err := m.checkGrid(); err != nil {
		return nil, fmt.Errorf(".zarray: %w", err)
	}
	switch v.DimensionSeparator {
	case "", ".":
	case "/":
		m.separator = "/"
	default:
		return nil, fmt.Errorf(".zarray: dimension_separator %q is not \".\" or \"/\"", v.DimensionSeparator)
	}
	if f := strings.TrimSpace(string(v.Filters)); f != "" && f != "null" && f != "[]" {
		return nil, fmt.Errorf(".zarray: filters %s are not supported", trunc(v.Filters))
	}
	switch v.Order {
	case "C", "":
	case "F":
		perm := make([]int, len(m.Shape))
		for i := range perm {
			perm[i] = len(perm) - 1 - i
		}
		m.Codecs = append(m.Codecs, Codec{Name: "transpose", Order: perm})
	default:
		return nil, fmt.Errorf(".zarray: order %q is not C or F", v.Order)
	}
	m.Codecs = append(m.Codecs, Codec{Name: "bytes", BigEndian: m.DType.BigEndian})
	if v.Compressor != nil && string(*v.Compressor) != "null" {
		var c struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(*v.Compressor, &c); err != nil {
			return nil, fmt.Errorf(".zarray: compressor: %w", err)
		}
		switch c.ID {
		case "zstd", "gzip", "zlib":
			m.Codecs = append(m.Codecs, Codec{Name: c.ID})
		case "blosc", "bz2", "lz4", "lzma":
			return nil, fmt.Errorf(".zarray: compressor %q is not supported (Orbax writes zstd by default)", c.ID)
		default:
			return nil, fmt.Errorf(".zarray: unknown compressor %q", c.ID)
		}
	}
	if m.Fill, err = parseFill(v.FillValue, m.DType, true); err != nil {
		return nil, fmt.Errorf(".zarray: fill_value: %w", err)
	}
	return m, nil
}

func (m *Metadata) checkGrid() error {
	if len(m.Shape) > maxRank {
		return fmt.Errorf("rank %d exceeds %d", len(m.Shape), maxRank)
	}
	if len(m.ChunkShape) != len(m.Shape) {
		return fmt.Errorf("chunk shape %v does not match the rank of shape %v", m.ChunkShape, m.Shape)
	}
	return checkShapes(m.Shape, m.ChunkShape, m.DType.Size)
}

func checkShapes(shape, chunk []int64, elem int) error {
	n, c := int64(1), int64(elem)
	for i := range shape {
		if shape[i] < 0 {
			return fmt.Errorf("negative dimension in shape %v", shape)
		}
		if chunk[i] <= 0 {
			return fmt.Errorf("chunk shape %v has a non-positive dimension", chunk)
		}
		if shape[i] > 0 && n > math.MaxInt64/4/shape[i] {
			return fmt.Errorf("shape %v is too large", shape)
		}
		n *= max(shape[i], 1)
		if c > maxChunkElems/chunk[i] {
			return fmt.Errorf("chunk shape %v is too large", chunk)
		}
		c *= chunk[i]
	}
	if n > math.MaxInt64/4/int64(elem) {
		return fmt.Errorf("shape %v is too large", shape)
	}
	return nil
}

type v3Meta struct {
	ZarrFormat *int   `json:"zarr_format"`
	NodeType   string `json:"node_type"`
	Shape      []int64
	DataType   json.RawMessage `json:"data_type"`
	ChunkGrid  struct {
		Name          string `json:"name"`
		Configuration struct {
			ChunkShape []int64 `json:"chunk_shape"`
		} `json:"configuration"`
	} `json:"chunk_grid"`
	ChunkKeyEncoding struct {
		Name          string `json:"name"`
		Configuration struct {
			Separator *string `json:"separator"`
		} `json:"configuration"`
	} `json:"chunk_key_encoding"`
	FillValue           json.RawMessage   `json:"fill_value"`
	Codecs              []json.RawMessage `json:"codecs"`
	StorageTransformers []json.RawMessage `json:"storage_transformers"`
}

// ParseV3 parses a zarr v3 zarr.json document of an array.
func ParseV3(data []byte) (*Metadata, error) {
	var v v3Meta
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("zarr.json: %w", err)
	}
	if v.ZarrFormat == nil || *v.ZarrFormat != 3 {
		return nil, errors.New("zarr.json: zarr_format is not 3")
	}
	if v.NodeType != "array" {
		return nil, fmt.Errorf("zarr.json: node_type %q is not an array", v.NodeType)
	}
	if len(v.StorageTransformers) > 0 {
		return nil, errors.New("zarr.json: storage_transformers are not supported")
	}
	m := &Metadata{ZarrFormat: 3, Shape: v.Shape}
	var dts string
	if err := json.Unmarshal(v.DataType, &dts); err != nil {
		return nil, fmt.Errorf("zarr.json: data_type %s is not a plain type name", trunc(v.DataType))
	}
	var err error
	if m.DType, err = ParseDTypeV3(dts); err != nil {
		return nil, fmt.Errorf("zarr.json: %w", err)
	}
	if v.ChunkGrid.Name != "regular" {
		return nil, fmt.Errorf("zarr.json: chunk_grid %q is not regular", v.ChunkGrid.Name)
	}
	m.ChunkShape = v.ChunkGrid.Configuration.ChunkShape
	if err := m.checkGrid(); err != nil {
		return nil, fmt.Errorf("zarr.json: %w", err)
	}
	sep := v.ChunkKeyEncoding.Configuration.Separator
	switch v.ChunkKeyEncoding.Name {
	case "default", "":
		m.separator = "/"
	case "v2":
		m.separator, m.v2Keys = ".", true
	default:
		return nil, fmt.Errorf("zarr.json: chunk_key_encoding %q is unknown", v.ChunkKeyEncoding.Name)
	}
	if sep != nil {
		if *sep != "/" && *sep != "." {
			return nil, fmt.Errorf("zarr.json: chunk key separator %q is not \"/\" or \".\"", *sep)
		}
		m.separator = *sep
	}
	if m.Codecs, err = parseCodecs(v.Codecs, len(m.Shape), m.ChunkShape, m.DType, 0); err != nil {
		return nil, fmt.Errorf("zarr.json: %w", err)
	}
	if m.Fill, err = parseFill(v.FillValue, m.DType, false); err != nil {
		return nil, fmt.Errorf("zarr.json: fill_value: %w", err)
	}
	return m, nil
}

type codecJSON struct {
	Name          string          `json:"name"`
	Configuration json.RawMessage `json:"configuration"`
}

// parseCodecs parses a v3 codec chain and checks its structure: array→array
// codecs (transpose), exactly one array→bytes codec (bytes or
// sharding_indexed), then bytes→bytes codecs.
func parseCodecs(raw []json.RawMessage, rank int, chunk []int64, dt DType, depth int) ([]Codec, error) {
	if depth > 4 {
		return nil, errors.New("sharding nested too deeply")
	}
	if len(raw) > 16 {
		return nil, fmt.Errorf("%d codecs is too many", len(raw))
	}
	var out []Codec
	stage := 0 // 0 array→array, 1 bytes→bytes
	for _, r := range raw {
		var c codecJSON
		if err := json.Unmarshal(r, &c); err != nil {
			// A bare string names a codec without configuration.
			if err2 := json.Unmarshal(r, &c.Name); err2 != nil {
				return nil, fmt.Errorf("codec %s: %w", trunc(r), err)
			}
		}
		cfg := c.Configuration
		if len(cfg) == 0 || string(cfg) == "null" {
			cfg = json.RawMessage("{}")
		}
		switch c.Name {
		case "transpose":
			if stage != 0 {
				return nil, errors.New("transpose codec after the array→bytes codec")
			}
			var t struct {
				Order json.RawMessage `json:"order"`
			}
			if err := json.Unmarshal(cfg, &t); err != nil {
				return nil, fmt.Errorf("transpose: %w", err)
			}
			perm, err := parsePerm(t.Order, rank)
			if err != nil {
				return nil, fmt.Errorf("transpose: %w", err)
			}
			out = append(out, Codec{Name: "transpose", Order: perm})
		case "bytes", "endian":
			if stage != 0 {
				return nil, errors.New("two array→bytes codecs")
			}
			var b struct {
				Endian string `json:"endian"`
			}
			if err := json.Unmarshal(cfg, &b); err != nil {
				return nil, fmt.Errorf("bytes: %w", err)
			}
			if b.Endian != "little" && b.Endian != "big" && !(b.Endian == "" && dt.Size == 1) {
				return nil, fmt.Errorf("bytes: endian %q", b.Endian)
			}
			out = append(out, Codec{Name: "bytes", BigEndian: b.Endian == "big" && dt.Size > 1 && dt.Kind != Raw})
			stage = 1
		case "sharding_indexed":
			if stage != 0 {
				return nil, errors.New("two array→bytes codecs")
			}
			for _, c := range out {
				if c.Name == "transpose" {
					return nil, errors.New("transpose before sharding_indexed is not supported")
				}
			}
			sh, err := parseSharding(cfg, rank, chunk, dt, depth)
			if err != nil {
				return nil, fmt.Errorf("sharding_indexed: %w", err)
			}
			out = append(out, Codec{Name: "sharding_indexed", Shard: sh})
			stage = 1
		case "zstd", "gzip", "crc32c":
			if stage != 1 {
				return nil, fmt.Errorf("%s codec before the array→bytes codec", c.Name)
			}
			out = append(out, Codec{Name: c.Name})
		case "blosc":
			return nil, errors.New("the blosc codec is not supported (Orbax writes zstd by default)")
		default:
			return nil, fmt.Errorf("unknown codec %q", c.Name)
		}
	}
	if stage != 1 {
		return nil, errors.New("codec chain has no bytes or sharding_indexed codec")
	}
	return out, nil
}

func parsePerm(raw json.RawMessage, rank int) ([]int, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		perm := make([]int, rank)
		for i := range perm {
			perm[i] = i
			if s == "F" {
				perm[i] = rank - 1 - i
			} else if s != "C" {
				return nil, fmt.Errorf("order %q", s)
			}
		}
		return perm, nil
	}
	var perm []int
	if err := json.Unmarshal(raw, &perm); err != nil {
		return nil, err
	}
	if len(perm) != rank {
		return nil, fmt.Errorf("order %v for rank %d", perm, rank)
	}
	seen := make([]bool, rank)
	for _, p := range perm {
		if p < 0 || p >= rank || seen[p] {
			return nil, fmt.Errorf("order %v is not a permutation", perm)
		}
		seen[p] = true
	}
	return perm, nil
}

func parseSharding(cfg json.RawMessage, rank int, outer []int64, dt DType, depth int) (*Sharding, error) {
	var s struct {
		ChunkShape    []int64           `json:"chunk_shape"`
		Codecs        []json.RawMessage `json:"codecs"`
		IndexCodecs   []json.RawMessage `json:"index_codecs"`
		IndexLocation string            `json:"index_location"`
	}
	if err := json.Unmarshal(cfg, &s); err != nil {
		return nil, err
	}
	if len(s.ChunkShape) != rank {
		return nil, fmt.Errorf("chunk_shape %v does not match rank %d", s.ChunkShape, rank)
	}
	for i, c := range s.ChunkShape {
		if c <= 0 || outer[i]%c != 0 {
			return nil, fmt.Errorf("inner chunk shape %v does not divide the shard shape %v", s.ChunkShape, outer)
		}
	}
	sh := &Sharding{ChunkShape: s.ChunkShape, IndexAtEnd: s.IndexLocation != "start"}
	if s.IndexLocation != "" && s.IndexLocation != "start" && s.IndexLocation != "end" {
		return nil, fmt.Errorf("index_location %q", s.IndexLocation)
	}
	var err error
	if sh.Codecs, err = parseCodecs(s.Codecs, rank, s.ChunkShape, dt, depth+1); err != nil {
		return nil, err
	}
	if len(s.IndexCodecs) == 0 {
		return nil, errors.New("index_codecs missing")
	}
	if sh.IndexCodecs, err = parseCodecs(s.IndexCodecs, rank+1, nil, DType{Kind: Uint, Size: 8}, depth+1); err != nil {
		return nil, fmt.Errorf("index_codecs: %w", err)
	}
	for _, c := range sh.IndexCodecs {
		if c.Name != "bytes" && c.Name != "crc32c" {
			return nil, fmt.Errorf("index codec %q is not supported (bytes and crc32c only)", c.Name)
		}
	}
	return sh, nil
}

// parseFill converts a JSON fill value to one little-endian element. null
// means zero, as tensorstore treats it.
func parseFill(raw json.RawMessage, dt DType, v2 bool) ([]byte, error) {
	out := make([]byte, dt.Size)
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return out, nil
	}
	var str string
	isStr := json.Unmarshal(raw, &str) == nil
	if dt.Kind == Raw || dt.Kind == Complex {
		if isStr && v2 {
			b, err := base64.StdEncoding.DecodeString(str)
			if err != nil || len(b) != dt.Size {
				return nil, fmt.Errorf("%s is not %d base64 bytes", trunc(raw), dt.Size)
			}
			return b, nil
		}
		if dt.Kind == Raw {
			var arr []int
			if err := json.Unmarshal(raw, &arr); err != nil || len(arr) != dt.Size {
				return nil, fmt.Errorf("%s is not %d bytes", trunc(raw), dt.Size)
			}
			for i, v := range arr {
				out[i] = byte(v)
			}
			return out, nil
		}
		return out, nil // complex fill values: zero only matters here
	}
	if dt.Kind == Bool {
		var b bool
		if err := json.Unmarshal(raw, &b); err == nil {
			if b {
				out[0] = 1
			}
			return out, nil
		}
	}
	var f float64
	var bits uint64
	haveBits := false
	if isStr {
		switch str {
		case "NaN":
			f = math.NaN()
		case "Infinity":
			f = math.Inf(1)
		case "-Infinity":
			f = math.Inf(-1)
		default:
			h, ok := strings.CutPrefix(str, "0x")
			if !ok {
				return nil, fmt.Errorf("%s is not a number", trunc(raw))
			}
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != dt.Size {
				return nil, fmt.Errorf("%s is not %d hex bytes", trunc(raw), dt.Size)
			}
			for _, x := range b {
				bits = bits<<8 | uint64(x)
			}
			haveBits = true
		}
	} else if dt.Kind == Int || dt.Kind == Uint || dt.Kind == Bool {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return nil, fmt.Errorf("%s is not a number", trunc(raw))
		}
		if dt.Kind == Uint {
			u, err := strconv.ParseUint(n.String(), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s is not an unsigned integer", n)
			}
			bits, haveBits = u, true
		} else {
			i, err := strconv.ParseInt(n.String(), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s is not an integer", n)
			}
			bits, haveBits = uint64(i), true
		}
	} else if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("%s is not a number", trunc(raw))
	}
	if !haveBits {
		switch {
		case dt.Kind == Float && dt.Size == 2:
			bits = uint64(float16.Fromfloat32(float32(f)).Bits())
		case dt.Kind == Float && dt.Size == 4:
			bits = uint64(math.Float32bits(float32(f)))
		case dt.Kind == Float && dt.Size == 8:
			bits = math.Float64bits(f)
		case dt.Kind == BFloat16:
			bits = uint64(bf16FromF32(float32(f)))
		default:
			return nil, fmt.Errorf("%s does not fit %s", trunc(raw), dt)
		}
	}
	var tmp [8]byte
	binary.LittleEndian.PutUint64(tmp[:], bits)
	copy(out, tmp[:dt.Size])
	return out, nil
}

// bf16FromF32 rounds to nearest even, keeping NaNs quiet.
func bf16FromF32(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func trunc(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// Package llamaref compares GGUF files with llama.cpp's reference outputs
// recorded in the shared fixtures' llamacpp.json: for each conversion
// (convert.f32/f16/bf16) the metadata keys with their GGUF types and
// values and every tensor's name, type, shape, size and sha256, and for
// each quantization (quantize.<PRESET>, quantize_pure.<TYPE>,
// quantize_pure_imatrix.<TYPE>) the tensors. It is test support: tests
// load a Reference, pick an Entry and call Compare on the file they wrote.
package llamaref

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
)

// FixturesEnv is the environment variable naming the shared fixtures
// directory.
const FixturesEnv = "GEMMACONV_FIXTURES"

// FixturePath returns $GEMMACONV_FIXTURES/<model>/llamacpp.json, or false
// when the variable is unset.
func FixturePath(model string) (string, bool) {
	dir := os.Getenv(FixturesEnv)
	if dir == "" {
		return "", false
	}
	return filepath.Join(dir, model, "llamacpp.json"), true
}

// Reference is one model's llamacpp.json.
type Reference struct {
	Path string
	// Description is the file's "reference" line (which llama.cpp made it).
	Description string
	// Entries by "section.name": "convert.f32", "quantize.Q4_K_M",
	// "quantize_pure.Q8_0", "quantize_pure_imatrix.IQ4_XS".
	Entries map[string]*Entry
}

// Entry is one llama.cpp output file's recorded contents.
type Entry struct {
	Name string
	// KV is the metadata in file order; empty when the reference records
	// none (quantize entries).
	KV []KV
	// Tensors in file order.
	Tensors []Tensor
}

// KV is one recorded metadata entry. Scalars have Value; arrays have Len
// and the SHA256 of their elements' little-endian bytes concatenated
// (strings without their length prefix).
type KV struct {
	Key string
	// Type is ["UINT32"], ["STRING"], ["ARRAY", "FLOAT32"], ...
	Type   []string
	Value  json.RawMessage
	Len    int
	SHA256 string
}

// Tensor is one recorded tensor. Shape is in GGUF ne[] order.
type Tensor struct {
	Name   string  `json:"name"`
	Type   string  `json:"type"`
	Shape  []int64 `json:"shape"`
	NBytes int64   `json:"nbytes"`
	SHA256 string  `json:"sha256"`
}

// Load reads a llamacpp.json.
func Load(path string) (*Reference, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r := &Reference{Path: path, Entries: map[string]*Entry{}}
	if d, ok := top["reference"]; ok {
		_ = json.Unmarshal(d, &r.Description)
	}
	for _, section := range []string{"convert", "quantize", "quantize_pure", "quantize_pure_imatrix"} {
		raw, ok := top[section]
		if !ok {
			continue
		}
		var entries map[string]json.RawMessage
		if err := json.Unmarshal(raw, &entries); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, section, err)
		}
		for name, e := range entries {
			full := section + "." + name
			entry, err := parseEntry(full, e)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, full, err)
			}
			r.Entries[full] = entry
		}
	}
	return r, nil
}

// parseEntry reads either {"tensors": [...], "kv": {...}} or a bare
// tensor list.
func parseEntry(name string, raw json.RawMessage) (*Entry, error) {
	e := &Entry{Name: name}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		return e, json.Unmarshal(raw, &e.Tensors)
	}
	var obj struct {
		Tensors []Tensor        `json:"tensors"`
		KV      json.RawMessage `json:"kv"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	e.Tensors = obj.Tensors
	if len(obj.KV) > 0 {
		kvs, err := parseKVObject(obj.KV)
		if err != nil {
			return nil, fmt.Errorf("kv: %w", err)
		}
		e.KV = kvs
	}
	return e, nil
}

// parseKVObject decodes the kv object keeping its key order.
func parseKVObject(raw json.RawMessage) ([]KV, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not an object")
	}
	var out []KV
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("bad key %v", t)
		}
		var v struct {
			Type   []string        `json:"type"`
			Value  json.RawMessage `json:"value"`
			Len    int             `json:"len"`
			SHA256 string          `json:"sha256"`
		}
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, KV{Key: key, Type: v.Type, Value: v.Value, Len: v.Len, SHA256: v.SHA256})
	}
	return out, nil
}

// Entry returns the named entry ("convert.f32", "quantize.Q4_K_M").
func (r *Reference) Entry(name string) (*Entry, error) {
	e, ok := r.Entries[name]
	if !ok {
		var names []string
		for n := range r.Entries {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%s has no entry %q (have %s)", r.Path, name, strings.Join(names, ", "))
	}
	return e, nil
}

// Options tune Compare. The zero value is the comparison the project's
// tests use.
type Options struct {
	// IgnoreKeys are not compared; nil means DefaultIgnoreKeys.
	IgnoreKeys []string
	// IgnoreKeyOrder and IgnoreTensorOrder skip the order checks.
	IgnoreKeyOrder    bool
	IgnoreTensorOrder bool
	// StrictEOT compares tokenizer.ggml.eot_token_id exactly. By default
	// llama.cpp's hardcoded Gemma 1 value 107 also matches a file whose
	// eot id is the id of its <end_of_turn> piece.
	StrictEOT bool
	// SkipKV and SkipTensors leave out a whole part.
	SkipKV      bool
	SkipTensors bool
}

// DefaultIgnoreKeys are derived by llama.cpp from the source directory's
// name and a parameter count, not from the model.
var DefaultIgnoreKeys = []string{"general.name", "general.size_label"}

// Difference is one way a file differs from the reference.
type Difference struct {
	// Kind is "kv" or "tensor".
	Kind string
	// Name is the key or tensor name.
	Name string
	// Field is what differs: "missing", "extra", "order", "type", "value",
	// "len", "sha256", "shape", "nbytes".
	Field string
	Want  string
	Got   string
}

func (d Difference) String() string {
	switch d.Field {
	case "missing":
		return fmt.Sprintf("%s %s: missing (want %s)", d.Kind, d.Name, d.Want)
	case "extra":
		return fmt.Sprintf("%s %s: not in the reference (got %s)", d.Kind, d.Name, d.Got)
	}
	return fmt.Sprintf("%s %s: %s: want %s, got %s", d.Kind, d.Name, d.Field, d.Want, d.Got)
}

// Compare opens the GGUF file at path and compares it with e.
func Compare(path string, e *Entry, opts Options) ([]Difference, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return CompareFile(f, e, opts)
}

// CompareFile compares an open GGUF file with e.
func CompareFile(f *gguf.File, e *Entry, opts Options) ([]Difference, error) {
	var diffs []Difference
	if !opts.SkipKV && len(e.KV) > 0 {
		d, err := compareKV(f, e.KV, opts)
		if err != nil {
			return nil, err
		}
		diffs = append(diffs, d...)
	}
	if !opts.SkipTensors {
		d, err := compareTensors(f, e.Tensors, opts)
		if err != nil {
			return nil, err
		}
		diffs = append(diffs, d...)
	}
	return diffs, nil
}

func compareKV(f *gguf.File, want []KV, opts Options) ([]Difference, error) {
	ignore := opts.IgnoreKeys
	if ignore == nil {
		ignore = DefaultIgnoreKeys
	}
	skip := func(k string) bool { return slices.Contains(ignore, k) }
	var diffs []Difference
	wantKeys := map[string]bool{}
	var wantOrder []string
	for _, w := range want {
		wantKeys[w.Key] = true
		if skip(w.Key) {
			continue
		}
		v, ok := f.Lookup(w.Key)
		if !ok {
			diffs = append(diffs, Difference{"kv", w.Key, "missing", describeWant(w), ""})
			continue
		}
		wantOrder = append(wantOrder, w.Key)
		d, err := compareValue(f, w, v, opts)
		if err != nil {
			return nil, err
		}
		diffs = append(diffs, d...)
	}
	var gotOrder []string
	for _, kv := range f.KV {
		if skip(kv.Key) {
			continue
		}
		if !wantKeys[kv.Key] {
			diffs = append(diffs, Difference{"kv", kv.Key, "extra", "", describeGot(kv.Value)})
			continue
		}
		gotOrder = append(gotOrder, kv.Key)
	}
	if !opts.IgnoreKeyOrder {
		if d, ok := orderDiff("kv", wantOrder, gotOrder); ok {
			diffs = append(diffs, d)
		}
	}
	return diffs, nil
}

// orderDiff reports the first position where two name sequences (over
// the same names) differ.
func orderDiff(kind string, want, got []string) (Difference, bool) {
	for i := range min(len(want), len(got)) {
		if want[i] != got[i] {
			return Difference{kind, want[i], "order", fmt.Sprintf("position %d", i), fmt.Sprintf("%s there", got[i])}, true
		}
	}
	return Difference{}, false
}

func typeNames(v any) []string {
	t, et, err := gguf.TypeOf(v)
	if err != nil {
		return []string{fmt.Sprintf("%T", v)}
	}
	if t == gguf.TypeArray {
		return []string{t.String(), et.String()}
	}
	return []string{t.String()}
}

func describeWant(w KV) string {
	if len(w.Type) > 0 && w.Type[0] == "ARRAY" {
		return fmt.Sprintf("%v len %d", w.Type, w.Len)
	}
	return fmt.Sprintf("%v %s", w.Type, w.Value)
}

func describeGot(v any) string {
	if t, _, _ := gguf.TypeOf(v); t == gguf.TypeArray {
		return fmt.Sprintf("%v len %d", typeNames(v), gguf.ArrayLen(v))
	}
	return fmt.Sprintf("%v %v", typeNames(v), v)
}

func compareValue(f *gguf.File, w KV, v any, opts Options) ([]Difference, error) {
	got := typeNames(v)
	if !slices.Equal(got, w.Type) {
		return []Difference{{"kv", w.Key, "type", strings.Join(w.Type, "/"), strings.Join(got, "/")}}, nil
	}
	if w.Type[0] == "ARRAY" {
		var diffs []Difference
		if n := gguf.ArrayLen(v); n != w.Len {
			diffs = append(diffs, Difference{"kv", w.Key, "len", strconv.Itoa(w.Len), strconv.Itoa(n)})
		}
		raw, err := ElementBytes(v)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", w.Key, err)
		}
		sum := sha256.Sum256(raw)
		if h := hex.EncodeToString(sum[:]); h != w.SHA256 {
			diffs = append(diffs, Difference{"kv", w.Key, "sha256", w.SHA256, h})
		}
		return diffs, nil
	}
	ok, err := scalarEqual(w.Value, v)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", w.Key, err)
	}
	if !ok && w.Key == "tokenizer.ggml.eot_token_id" && !opts.StrictEOT && string(w.Value) == "107" {
		// llama.cpp hardcodes Google's id of <end_of_turn>; the piece's
		// own id is accepted too.
		if tokens, isStr := lookupStrings(f, "tokenizer.ggml.tokens"); isStr {
			if id, isU32 := v.(uint32); isU32 && int(id) < len(tokens) && tokens[id] == "<end_of_turn>" {
				ok = true
			}
		}
	}
	if !ok {
		return []Difference{{"kv", w.Key, "value", string(w.Value), fmt.Sprint(v)}}, nil
	}
	return nil, nil
}

func lookupStrings(f *gguf.File, key string) ([]string, bool) {
	v, ok := f.Lookup(key)
	if !ok {
		return nil, false
	}
	s, ok := v.([]string)
	return s, ok
}

// scalarEqual compares a JSON-recorded scalar with a file value of the
// same GGUF type. Float32 values are recorded widened to float64, so they
// compare exactly after widening.
func scalarEqual(want json.RawMessage, v any) (bool, error) {
	switch x := v.(type) {
	case string:
		var s string
		if err := json.Unmarshal(want, &s); err != nil {
			return false, err
		}
		return s == x, nil
	case bool:
		var b bool
		if err := json.Unmarshal(want, &b); err != nil {
			return false, err
		}
		return b == x, nil
	case float32, float64:
		w, err := strconv.ParseFloat(string(want), 64)
		if err != nil {
			return false, err
		}
		var g float64
		if f32, ok := x.(float32); ok {
			g = float64(f32)
		} else {
			g = x.(float64)
		}
		return g == w || (math.IsNaN(g) && math.IsNaN(w)), nil
	case uint8, uint16, uint32, uint64:
		w, err := strconv.ParseUint(string(want), 10, 64)
		if err != nil {
			return false, err
		}
		return fmt.Sprint(x) == strconv.FormatUint(w, 10), nil
	case int8, int16, int32, int64:
		w, err := strconv.ParseInt(string(want), 10, 64)
		if err != nil {
			return false, err
		}
		return fmt.Sprint(x) == strconv.FormatInt(w, 10), nil
	}
	return false, fmt.Errorf("unexpected value type %T", v)
}

// ElementBytes returns an array value's elements as llamacpp.json hashes
// them: little-endian values concatenated, strings without their length
// prefix, booleans as one byte, nested arrays as their elements' bytes.
func ElementBytes(v any) ([]byte, error) {
	var buf bytes.Buffer
	le := binary.LittleEndian
	switch a := v.(type) {
	case []uint8:
		buf.Write(a)
	case []string:
		for _, s := range a {
			buf.WriteString(s)
		}
	case []bool:
		for _, b := range a {
			if b {
				buf.WriteByte(1)
			} else {
				buf.WriteByte(0)
			}
		}
	case []any:
		for _, e := range a {
			b, err := ElementBytes(e)
			if err != nil {
				return nil, err
			}
			buf.Write(b)
		}
	case []int8, []uint16, []int16, []uint32, []int32, []float32, []uint64, []int64, []float64:
		if err := binary.Write(&buf, le, a); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%T is not an array value", v)
	}
	return buf.Bytes(), nil
}

func compareTensors(f *gguf.File, want []Tensor, opts Options) ([]Difference, error) {
	var diffs []Difference
	wantNames := map[string]bool{}
	var wantOrder []string
	for _, w := range want {
		wantNames[w.Name] = true
		ti := f.Tensor(w.Name)
		if ti == nil {
			diffs = append(diffs, Difference{"tensor", w.Name, "missing", fmt.Sprintf("%s %v", w.Type, w.Shape), ""})
			continue
		}
		wantOrder = append(wantOrder, w.Name)
		if got := ti.Type.String(); got != w.Type {
			diffs = append(diffs, Difference{"tensor", w.Name, "type", w.Type, got})
		}
		if !slices.Equal(ti.Dims, w.Shape) {
			diffs = append(diffs, Difference{"tensor", w.Name, "shape", fmt.Sprint(w.Shape), fmt.Sprint(ti.Dims)})
		}
		if ti.Size != w.NBytes {
			diffs = append(diffs, Difference{"tensor", w.Name, "nbytes", strconv.FormatInt(w.NBytes, 10), strconv.FormatInt(ti.Size, 10)})
		}
		h, err := TensorSHA256(f, ti)
		if err != nil {
			return nil, err
		}
		if h != w.SHA256 {
			diffs = append(diffs, Difference{"tensor", w.Name, "sha256", w.SHA256, h})
		}
	}
	var gotOrder []string
	for _, ti := range f.Tensors {
		if !wantNames[ti.Name] {
			diffs = append(diffs, Difference{"tensor", ti.Name, "extra", "", fmt.Sprintf("%s %v", ti.Type, ti.Dims)})
			continue
		}
		gotOrder = append(gotOrder, ti.Name)
	}
	if !opts.IgnoreTensorOrder {
		if d, ok := orderDiff("tensor", wantOrder, gotOrder); ok {
			diffs = append(diffs, d)
		}
	}
	return diffs, nil
}

// TensorSHA256 hashes a tensor's data as llamacpp.json records it.
func TensorSHA256(f *gguf.File, ti *gguf.TensorInfo) (string, error) {
	w := f.Window(ti)
	defer w.Release()
	h := sha256.New()
	if b := w.Bytes(); b != nil {
		h.Write(b)
	} else if _, err := io.Copy(h, io.NewSectionReader(w, 0, w.Size())); err != nil {
		return "", fmt.Errorf("tensor %s: %w", ti.Name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Report formats differences one per line, at most limit of them (0 for
// all), for a test failure message.
func Report(diffs []Difference, limit int) string {
	var b strings.Builder
	for i, d := range diffs {
		if limit > 0 && i == limit {
			fmt.Fprintf(&b, "... and %d more\n", len(diffs)-limit)
			break
		}
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// ErrNoFixtures is returned by LoadFixture when GEMMACONV_FIXTURES is unset.
var ErrNoFixtures = errors.New(FixturesEnv + " not set")

// LoadFixture loads $GEMMACONV_FIXTURES/<model>/llamacpp.json.
func LoadFixture(model string) (*Reference, error) {
	p, ok := FixturePath(model)
	if !ok {
		return nil, ErrNoFixtures
	}
	return Load(p)
}

// KVValues returns the file's metadata as the reference records it, for
// debugging: scalars as their values, arrays as type, len and sha256.
func KVValues(kvs []ir.KV) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		if t, _, _ := gguf.TypeOf(kv.Value); t == gguf.TypeArray {
			raw, _ := ElementBytes(kv.Value)
			sum := sha256.Sum256(raw)
			out = append(out, fmt.Sprintf("%s %v len=%d sha256=%x", kv.Key, typeNames(kv.Value), gguf.ArrayLen(kv.Value), sum))
			continue
		}
		out = append(out, fmt.Sprintf("%s %v %v", kv.Key, typeNames(kv.Value), kv.Value))
	}
	return out
}

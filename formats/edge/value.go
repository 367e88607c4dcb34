package edge

import (
	"encoding/binary"
	"fmt"
	"math"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/gemmaconv/gemmaconv/ir"
)

// width is the bytes one element of type t takes in a value's raw bytes.
func width(t ir.KVType) int {
	switch t {
	case ir.KVUint8, ir.KVInt8, ir.KVBool:
		return 1
	case ir.KVUint16, ir.KVInt16:
		return 2
	case ir.KVUint32, ir.KVInt32, ir.KVFloat32:
		return 4
	case ir.KVUint64, ir.KVInt64, ir.KVFloat64:
		return 8
	case ir.KVString, ir.KVArray:
		return 0
	}
	return -1
}

// encodeValue splits a Go value (the types ir.KV lists) into its type,
// array flag, little-endian raw bytes, strings or items.
func encodeValue(v any) (t ir.KVType, array bool, raw []byte, strs []string, items []any, err error) {
	vt, elem, ok := ir.KVTypeOf(v)
	if !ok {
		return 0, false, nil, nil, nil, fmt.Errorf("unsupported metadata value type %T", v)
	}
	array = vt == ir.KVArray
	t = vt
	if array {
		t = elem
	}
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		raw = []byte{x}
	case int8:
		raw = []byte{byte(x)}
	case uint16:
		raw = le.AppendUint16(nil, x)
	case int16:
		raw = le.AppendUint16(nil, uint16(x))
	case uint32:
		raw = le.AppendUint32(nil, x)
	case int32:
		raw = le.AppendUint32(nil, uint32(x))
	case float32:
		raw = le.AppendUint32(nil, math.Float32bits(x))
	case bool:
		raw = []byte{boolByte(x)}
	case string:
		strs = []string{x}
	case uint64:
		raw = le.AppendUint64(nil, x)
	case int64:
		raw = le.AppendUint64(nil, uint64(x))
	case float64:
		raw = le.AppendUint64(nil, math.Float64bits(x))
	case []uint8:
		raw = x
	case []int8:
		raw = make([]byte, len(x))
		for i, e := range x {
			raw[i] = byte(e)
		}
	case []bool:
		raw = make([]byte, len(x))
		for i, e := range x {
			raw[i] = boolByte(e)
		}
	case []uint16:
		for _, e := range x {
			raw = le.AppendUint16(raw, e)
		}
	case []int16:
		for _, e := range x {
			raw = le.AppendUint16(raw, uint16(e))
		}
	case []uint32:
		for _, e := range x {
			raw = le.AppendUint32(raw, e)
		}
	case []int32:
		for _, e := range x {
			raw = le.AppendUint32(raw, uint32(e))
		}
	case []float32:
		for _, e := range x {
			raw = le.AppendUint32(raw, math.Float32bits(e))
		}
	case []uint64:
		for _, e := range x {
			raw = le.AppendUint64(raw, e)
		}
	case []int64:
		for _, e := range x {
			raw = le.AppendUint64(raw, uint64(e))
		}
	case []float64:
		for _, e := range x {
			raw = le.AppendUint64(raw, math.Float64bits(e))
		}
	case []string:
		strs = x
	case []any:
		items = x
	}
	return t, array, raw, strs, items, nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// buildValue writes v as a Value table. Children are built before the
// table, as FlatBuffers requires.
func buildValue(b *flatbuffers.Builder, v any, depth int) (flatbuffers.UOffsetT, error) {
	if depth > maxValueDepth {
		return 0, fmt.Errorf("arrays nested more than %d deep", maxValueDepth)
	}
	t, array, raw, strs, items, err := encodeValue(v)
	if err != nil {
		return 0, err
	}
	var rawOff, strsOff, itemsOff flatbuffers.UOffsetT
	switch {
	case t == ir.KVArray:
		offs := make([]flatbuffers.UOffsetT, len(items))
		for i, it := range items {
			if offs[i], err = buildValue(b, it, depth+1); err != nil {
				return 0, fmt.Errorf("element %d: %w", i, err)
			}
		}
		itemsOff = b.CreateVectorOfTables(offs)
	case t == ir.KVString:
		strsOff = buildStrings(b, strs)
	default:
		rawOff = b.CreateByteVector(raw)
	}
	b.StartObject(numValueFields)
	if rawOff != 0 {
		b.PrependUOffsetTSlot(slot(vtValueRaw), rawOff, 0)
	}
	if strsOff != 0 {
		b.PrependUOffsetTSlot(slot(vtValueStrings), strsOff, 0)
	}
	if itemsOff != 0 {
		b.PrependUOffsetTSlot(slot(vtValueItems), itemsOff, 0)
	}
	b.PrependUint8(uint8(t))
	b.Slot(slot(vtValueType))
	b.PrependBool(array)
	b.Slot(slot(vtValueIsArray))
	return b.EndObject(), nil
}

// buildStrings writes a vector of strings.
func buildStrings(b *flatbuffers.Builder, strs []string) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(strs))
	for i, s := range strs {
		offs[i] = b.CreateString(s)
	}
	return b.CreateVectorOfTables(offs) // a vector of offsets, whatever they point at
}

// decodeValue reads a verified Value table back into the Go type
// encodeValue took, copying everything out of the buffer.
func decodeValue(v *verifier, x *fbValue, item string) (any, error) {
	at := uint64(x._tab.Pos)
	t, array := ir.KVType(x.Type()), x.IsArray()
	w := width(t)
	if w < 0 {
		return nil, v.errf(at, item, "unknown value type %d", t)
	}
	raw, ns, ni := x.RawBytes(), x.StringsLength(), x.ItemsLength()
	switch {
	case t == ir.KVArray && !array:
		return nil, v.errf(at, item, "value of type array is not marked as an array")
	case t == ir.KVArray && (raw != nil || ns != 0):
		return nil, v.errf(at, item, "array of arrays carries raw bytes or strings")
	case t == ir.KVString && (raw != nil || ni != 0):
		return nil, v.errf(at, item, "string value carries raw bytes or items")
	case w > 0 && (ns != 0 || ni != 0):
		return nil, v.errf(at, item, "%s value carries strings or items", typeName(t))
	case t == ir.KVString && !array && ns != 1:
		return nil, v.errf(at, item, "string value has %d strings, want 1", ns)
	case w > 0 && !array && len(raw) != w:
		return nil, v.errf(at, item, "%s value has %d raw bytes, want %d", typeName(t), len(raw), w)
	case w > 0 && len(raw)%w != 0:
		return nil, v.errf(at, item, "%s array has %d raw bytes, not a multiple of %d", typeName(t), len(raw), w)
	}
	if t == ir.KVString {
		s := make([]string, ns)
		for i := range s {
			s[i] = string(x.Strings(i))
		}
		if !array {
			return s[0], nil
		}
		return s, nil
	}
	if t == ir.KVArray {
		out := make([]any, ni)
		var it fbValue
		for i := range out {
			x.Items(&it, i)
			e, err := decodeValue(v, &it, fmt.Sprintf("%s[%d]", item, i))
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	if t == ir.KVBool {
		for i, b := range raw {
			if b > 1 {
				return nil, v.errf(at, item, "bool element %d is %d, neither 0 nor 1", i, b)
			}
		}
	}
	arr := decodeRaw(t, raw)
	if array {
		return arr, nil
	}
	return scalarOf(arr), nil
}

// decodeRaw turns little-endian elements into a Go slice of t's type.
func decodeRaw(t ir.KVType, raw []byte) any {
	le := binary.LittleEndian
	switch t {
	case ir.KVUint8:
		return append([]uint8{}, raw...)
	case ir.KVInt8:
		a := make([]int8, len(raw))
		for i := range a {
			a[i] = int8(raw[i])
		}
		return a
	case ir.KVBool:
		a := make([]bool, len(raw))
		for i := range a {
			a[i] = raw[i] == 1
		}
		return a
	case ir.KVUint16:
		a := make([]uint16, len(raw)/2)
		for i := range a {
			a[i] = le.Uint16(raw[2*i:])
		}
		return a
	case ir.KVInt16:
		a := make([]int16, len(raw)/2)
		for i := range a {
			a[i] = int16(le.Uint16(raw[2*i:]))
		}
		return a
	case ir.KVUint32:
		a := make([]uint32, len(raw)/4)
		for i := range a {
			a[i] = le.Uint32(raw[4*i:])
		}
		return a
	case ir.KVInt32:
		a := make([]int32, len(raw)/4)
		for i := range a {
			a[i] = int32(le.Uint32(raw[4*i:]))
		}
		return a
	case ir.KVFloat32:
		a := make([]float32, len(raw)/4)
		for i := range a {
			a[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return a
	case ir.KVUint64:
		a := make([]uint64, len(raw)/8)
		for i := range a {
			a[i] = le.Uint64(raw[8*i:])
		}
		return a
	case ir.KVInt64:
		a := make([]int64, len(raw)/8)
		for i := range a {
			a[i] = int64(le.Uint64(raw[8*i:]))
		}
		return a
	default: // ir.KVFloat64
		a := make([]float64, len(raw)/8)
		for i := range a {
			a[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return a
	}
}

// scalarOf returns the only element of a one-element slice.
func scalarOf(a any) any {
	switch x := a.(type) {
	case []uint8:
		return x[0]
	case []int8:
		return x[0]
	case []bool:
		return x[0]
	case []uint16:
		return x[0]
	case []int16:
		return x[0]
	case []uint32:
		return x[0]
	case []int32:
		return x[0]
	case []float32:
		return x[0]
	case []uint64:
		return x[0]
	case []int64:
		return x[0]
	default:
		return a.([]float64)[0]
	}
}

func typeName(t ir.KVType) string {
	names := [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("type %d", t)
}

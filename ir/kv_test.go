package ir

import "testing"

func TestKVTypeOf(t *testing.T) {
	for _, c := range []struct {
		v         any
		typ, elem KVType
	}{
		{uint8(1), KVUint8, 0},
		{int8(1), KVInt8, 0},
		{uint16(1), KVUint16, 0},
		{int16(1), KVInt16, 0},
		{uint32(1), KVUint32, 0},
		{int32(1), KVInt32, 0},
		{float32(1), KVFloat32, 0},
		{true, KVBool, 0},
		{"s", KVString, 0},
		{uint64(1), KVUint64, 0},
		{int64(1), KVInt64, 0},
		{1.0, KVFloat64, 0},
		{[]uint8{1}, KVArray, KVUint8},
		{[]int8{1}, KVArray, KVInt8},
		{[]uint16{1}, KVArray, KVUint16},
		{[]int16{1}, KVArray, KVInt16},
		{[]uint32{1}, KVArray, KVUint32},
		{[]int32{1}, KVArray, KVInt32},
		{[]float32{1}, KVArray, KVFloat32},
		{[]bool{true}, KVArray, KVBool},
		{[]string{"s"}, KVArray, KVString},
		{[]uint64{1}, KVArray, KVUint64},
		{[]int64{1}, KVArray, KVInt64},
		{[]float64{1}, KVArray, KVFloat64},
		{[]any{[]int32{1}}, KVArray, KVArray},
	} {
		typ, elem, ok := KVTypeOf(c.v)
		if !ok || typ != c.typ || elem != c.elem {
			t.Errorf("KVTypeOf(%T) = %d, %d, %v; want %d, %d, true", c.v, typ, elem, ok, c.typ, c.elem)
		}
	}
	for _, v := range []any{1, uint(1), nil, []int{1}, map[string]string{}} {
		if _, _, ok := KVTypeOf(v); ok {
			t.Errorf("KVTypeOf(%T) accepted it", v)
		}
	}
}

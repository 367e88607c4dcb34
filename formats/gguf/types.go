// Package gguf reads and writes GGUF v3 files, the format of llama.cpp and
// ggml, and maps them to and from gemmaconv's IR.
//
// The low-level API is Open (a validated, mmap-backed view of any GGUF
// file: metadata in file order and lazily read tensor windows) and
// WriteFile (metadata and tensors streamed to disk atomically). The model
// API is Write, which builds the metadata llama.cpp's converter writes for
// Gemma 1, 2 and 3 from an ir.Model, and OpenModel (also registered with
// ir.RegisterFormat as "gguf"), which maps a Gemma GGUF file back to an
// ir.Model. docs/gguf.md lists the keys and where they differ from
// llama.cpp's.
package gguf

import (
	"fmt"

	"github.com/gemmaconv/gemmaconv/ir"
)

// ValueType is a GGUF metadata value type (gguf_metadata_value_type).
type ValueType uint32

// The GGUF metadata value types, numbered as ir.KVType (which follows
// gguf_type).
const (
	TypeUint8   = ValueType(ir.KVUint8)
	TypeInt8    = ValueType(ir.KVInt8)
	TypeUint16  = ValueType(ir.KVUint16)
	TypeInt16   = ValueType(ir.KVInt16)
	TypeUint32  = ValueType(ir.KVUint32)
	TypeInt32   = ValueType(ir.KVInt32)
	TypeFloat32 = ValueType(ir.KVFloat32)
	TypeBool    = ValueType(ir.KVBool)
	TypeString  = ValueType(ir.KVString)
	TypeArray   = ValueType(ir.KVArray)
	TypeUint64  = ValueType(ir.KVUint64)
	TypeInt64   = ValueType(ir.KVInt64)
	TypeFloat64 = ValueType(ir.KVFloat64)
)

var valueTypeNames = [...]string{"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"}

// String returns the type's name as gguf-py spells it ("UINT32", "ARRAY").
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// fixedSize is the encoded size of a scalar of type t; 0 for strings and
// arrays, whose size depends on their contents.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// minSize is the fewest bytes one value of type t can occupy in a file:
// a string is at least its 8-byte length, an array its 4-byte element
// type and 8-byte count. The reader uses it to bound counts by the bytes
// that remain before it allocates anything.
func (t ValueType) minSize() int {
	switch t {
	case TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return t.fixedSize()
}

func (t ValueType) valid() bool { return t <= TypeFloat64 }

// TypeOf returns the GGUF type of a metadata value as ir.KV holds it, and
// for a slice its element type. Nested arrays are []any whose elements are
// slices; their element type is TypeArray.
func TypeOf(v any) (typ, elem ValueType, err error) {
	t, e, ok := ir.KVTypeOf(v)
	if !ok {
		return 0, 0, fmt.Errorf("%T is not a GGUF value type", v)
	}
	if a, nested := v.([]any); nested {
		for i, x := range a {
			if t, _, err := TypeOf(x); err != nil || t != TypeArray {
				return 0, 0, fmt.Errorf("nested array element %d is %T, not an array", i, x)
			}
		}
	}
	return ValueType(t), ValueType(e), nil
}

// ArrayLen returns the number of elements of an array value (a value
// whose TypeOf is TypeArray), and 0 for any other value.
func ArrayLen(v any) int {
	switch a := v.(type) {
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []bool:
		return len(a)
	case []string:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []any:
		return len(a)
	}
	return 0
}

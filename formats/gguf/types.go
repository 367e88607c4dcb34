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
)

// ValueType is a GGUF metadata value type (gguf_metadata_value_type).
type ValueType uint32

// The GGUF metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
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
	switch v := v.(type) {
	case uint8:
		return TypeUint8, 0, nil
	case int8:
		return TypeInt8, 0, nil
	case uint16:
		return TypeUint16, 0, nil
	case int16:
		return TypeInt16, 0, nil
	case uint32:
		return TypeUint32, 0, nil
	case int32:
		return TypeInt32, 0, nil
	case float32:
		return TypeFloat32, 0, nil
	case bool:
		return TypeBool, 0, nil
	case string:
		return TypeString, 0, nil
	case uint64:
		return TypeUint64, 0, nil
	case int64:
		return TypeInt64, 0, nil
	case float64:
		return TypeFloat64, 0, nil
	case []uint8:
		return TypeArray, TypeUint8, nil
	case []int8:
		return TypeArray, TypeInt8, nil
	case []uint16:
		return TypeArray, TypeUint16, nil
	case []int16:
		return TypeArray, TypeInt16, nil
	case []uint32:
		return TypeArray, TypeUint32, nil
	case []int32:
		return TypeArray, TypeInt32, nil
	case []float32:
		return TypeArray, TypeFloat32, nil
	case []bool:
		return TypeArray, TypeBool, nil
	case []string:
		return TypeArray, TypeString, nil
	case []uint64:
		return TypeArray, TypeUint64, nil
	case []int64:
		return TypeArray, TypeInt64, nil
	case []float64:
		return TypeArray, TypeFloat64, nil
	case []any:
		for i, e := range v {
			if t, _, err := TypeOf(e); err != nil || t != TypeArray {
				return 0, 0, fmt.Errorf("nested array element %d is %T, not an array", i, e)
			}
		}
		return TypeArray, TypeArray, nil
	}
	return 0, 0, fmt.Errorf("%T is not a GGUF value type", v)
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

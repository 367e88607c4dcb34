package ir

// KVType numbers the types a KV value can have as GGUF's gguf_type does
// (gguf_metadata_value_type), so formats that store metadata share one
// classification and move it between each other without a table.
type KVType uint32

// The KV value types, numbered as in GGUF.
const (
	KVUint8   KVType = 0
	KVInt8    KVType = 1
	KVUint16  KVType = 2
	KVInt16   KVType = 3
	KVUint32  KVType = 4
	KVInt32   KVType = 5
	KVFloat32 KVType = 6
	KVBool    KVType = 7
	KVString  KVType = 8
	KVArray   KVType = 9
	KVUint64  KVType = 10
	KVInt64   KVType = 11
	KVFloat64 KVType = 12
)

// KVTypeOf classifies a KV value: its type and, for a slice (typ ==
// KVArray), the type of its elements. A nested array is a []any whose
// elements are slices; its element type is KVArray, and KVTypeOf does not
// look inside it (callers that require the elements to be arrays check
// them). ok is false for a Go type KV does not allow.
func KVTypeOf(v any) (typ, elem KVType, ok bool) {
	switch v.(type) {
	case uint8:
		return KVUint8, 0, true
	case int8:
		return KVInt8, 0, true
	case uint16:
		return KVUint16, 0, true
	case int16:
		return KVInt16, 0, true
	case uint32:
		return KVUint32, 0, true
	case int32:
		return KVInt32, 0, true
	case float32:
		return KVFloat32, 0, true
	case bool:
		return KVBool, 0, true
	case string:
		return KVString, 0, true
	case uint64:
		return KVUint64, 0, true
	case int64:
		return KVInt64, 0, true
	case float64:
		return KVFloat64, 0, true
	case []uint8:
		return KVArray, KVUint8, true
	case []int8:
		return KVArray, KVInt8, true
	case []uint16:
		return KVArray, KVUint16, true
	case []int16:
		return KVArray, KVInt16, true
	case []uint32:
		return KVArray, KVUint32, true
	case []int32:
		return KVArray, KVInt32, true
	case []float32:
		return KVArray, KVFloat32, true
	case []bool:
		return KVArray, KVBool, true
	case []string:
		return KVArray, KVString, true
	case []uint64:
		return KVArray, KVUint64, true
	case []int64:
		return KVArray, KVInt64, true
	case []float64:
		return KVArray, KVFloat64, true
	case []any:
		return KVArray, KVArray, true
	}
	return 0, 0, false
}

package ir

import "fmt"

// DType is the element type of a tensor. Its numeric values are ggml's
// type ids (enum ggml_type), so a GGUF file's type field maps to a DType
// without a table, and quantized tensors read from GGUF keep their type.
type DType uint32

// The ggml type ids. Ids that ggml has retired (4, 5, 31–33, 36–38) are
// absent: a file that uses them is rejected as an unknown type.
const (
	F32     DType = 0
	F16     DType = 1
	Q4_0    DType = 2
	Q4_1    DType = 3
	Q5_0    DType = 6
	Q5_1    DType = 7
	Q8_0    DType = 8
	Q8_1    DType = 9
	Q2_K    DType = 10
	Q3_K    DType = 11
	Q4_K    DType = 12
	Q5_K    DType = 13
	Q6_K    DType = 14
	Q8_K    DType = 15
	IQ2_XXS DType = 16
	IQ2_XS  DType = 17
	IQ3_XXS DType = 18
	IQ1_S   DType = 19
	IQ4_NL  DType = 20
	IQ3_S   DType = 21
	IQ2_S   DType = 22
	IQ4_XS  DType = 23
	I8      DType = 24
	I16     DType = 25
	I32     DType = 26
	I64     DType = 27
	F64     DType = 28
	IQ1_M   DType = 29
	BF16    DType = 30
	TQ1_0   DType = 34
	TQ2_0   DType = 35
	MXFP4   DType = 39
)

// dtypeInfo describes one type's block layout: BlockSize elements are
// stored in TypeSize bytes.
type dtypeInfo struct {
	name      string
	blockSize int
	typeSize  int
}

var dtypes = map[DType]dtypeInfo{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 18},
	Q4_1:    {"Q4_1", 32, 20},
	Q5_0:    {"Q5_0", 32, 22},
	Q5_1:    {"Q5_1", 32, 24},
	Q8_0:    {"Q8_0", 32, 34},
	Q8_1:    {"Q8_1", 32, 36},
	Q2_K:    {"Q2_K", 256, 84},
	Q3_K:    {"Q3_K", 256, 110},
	Q4_K:    {"Q4_K", 256, 144},
	Q5_K:    {"Q5_K", 256, 176},
	Q6_K:    {"Q6_K", 256, 210},
	Q8_K:    {"Q8_K", 256, 292},
	IQ2_XXS: {"IQ2_XXS", 256, 66},
	IQ2_XS:  {"IQ2_XS", 256, 74},
	IQ3_XXS: {"IQ3_XXS", 256, 98},
	IQ1_S:   {"IQ1_S", 256, 50},
	IQ4_NL:  {"IQ4_NL", 32, 18},
	IQ3_S:   {"IQ3_S", 256, 110},
	IQ2_S:   {"IQ2_S", 256, 82},
	IQ4_XS:  {"IQ4_XS", 256, 136},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", 256, 56},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", 256, 54},
	TQ2_0:   {"TQ2_0", 256, 66},
	MXFP4:   {"MXFP4", 32, 17},
}

// Known reports whether t is a type this package has a layout for.
func (t DType) Known() bool { _, ok := dtypes[t]; return ok }

// String returns ggml's name for the type ("Q4_K"), or "DType(N)".
func (t DType) String() string {
	if i, ok := dtypes[t]; ok {
		return i.name
	}
	return fmt.Sprintf("DType(%d)", uint32(t))
}

// BlockSize is the number of elements in one block (1 for plain types).
func (t DType) BlockSize() int { return dtypes[t].blockSize }

// TypeSize is the number of bytes one block occupies.
func (t DType) TypeSize() int { return dtypes[t].typeSize }

// IsQuantized reports whether t stores elements in blocks of more than one.
func (t DType) IsQuantized() bool { return dtypes[t].blockSize > 1 }

// IsFloat reports whether t is one of the plain float types F32, F16, BF16, F64.
func (t DType) IsFloat() bool { return t == F32 || t == F16 || t == BF16 || t == F64 }

// ParseDType maps a ggml type name ("q4_k", "BF16") to its DType.
func ParseDType(name string) (DType, error) {
	for t, i := range dtypes {
		if equalFold(i.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown tensor type %q", name)
}

// RowBytes returns the bytes taken by one row of n elements of type t. It
// fails when n is not a multiple of the block size or t is unknown.
func RowBytes(t DType, n int64) (int64, error) {
	i, ok := dtypes[t]
	if !ok {
		return 0, fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	if n < 0 || n%int64(i.blockSize) != 0 {
		return 0, fmt.Errorf("row of %d elements is not a multiple of %s's block size %d", n, i.name, i.blockSize)
	}
	return n / int64(i.blockSize) * int64(i.typeSize), nil
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

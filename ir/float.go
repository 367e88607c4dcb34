package ir

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DecodeFloats widens little-endian values of a plain float type (F32,
// F16, BF16, F64) into dst, which must hold len(src)/elemsize values. The
// widening to float32 is exact for F16 and BF16; F64 rounds to nearest.
func DecodeFloats(t DType, src []byte, dst []float32) error {
	var size int
	switch t {
	case F32, I32:
		size = 4
	case F16, BF16:
		size = 2
	case F64:
		size = 8
	default:
		return fmt.Errorf("decode: %s is not a plain float type", t)
	}
	if len(src)%size != 0 || len(dst) < len(src)/size {
		return fmt.Errorf("decode: %d bytes of %s into %d values", len(src), t, len(dst))
	}
	n := len(src) / size
	switch t {
	case F32:
		for i := 0; i < n; i++ {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := 0; i < n; i++ {
			dst[i] = float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32()
		}
	case BF16:
		for i := 0; i < n; i++ {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case F64:
		for i := 0; i < n; i++ {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	default:
		return fmt.Errorf("decode: %s is not a float type", t)
	}
	return nil
}

// EncodeF32 writes float32 values little-endian into dst (4 bytes each).
func EncodeF32(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

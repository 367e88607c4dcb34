package quantize

import (
	"math"

	"github.com/x448/float16"
)

// nearestInt rounds to the nearest integer with ties to even, the way
// ggml's nearest_int does (adding 1.5*2^23 and reading the mantissa), for
// |f| <= 4194303. Kernels must use it wherever ggml does so that rounding
// matches bit for bit.
func nearestInt(f float32) int32 {
	v := f + 12582912.0
	return int32(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// fp32ToFP16 converts to IEEE half precision, rounding to nearest even
// (ggml's GGML_FP32_TO_FP16).
func fp32ToFP16(f float32) uint16 { return uint16(float16.Fromfloat32(f)) }

// fp16ToFP32 widens an IEEE half to float32 exactly.
func fp16ToFP32(h uint16) float32 { return float16.Frombits(h).Float32() }

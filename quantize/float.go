package quantize

import (
	"encoding/binary"
	"math"

	"github.com/gemmaconv/gemmaconv/ir"
)

// This file holds the plain float types (F16, BF16) and the scalar
// conversions that every block type in this package shares. ggml ignores
// the importance matrix for both float types (ggml_quantize_chunk converts
// them element by element), so these kernels ignore it too.

func init() {
	Register(ir.F16, Kernel{Quantize: quantizeF16, Dequantize: dequantizeF16})
	Register(ir.BF16, Kernel{Quantize: quantizeBF16, Dequantize: dequantizeBF16})
}

// ggmlFP16 converts f to IEEE half precision exactly as ggml's
// ggml_compute_fp32_to_fp16 (GGML_FP32_TO_FP16) does. For every non-NaN
// input this is plain round-to-nearest-even (the same as fp32ToFP16); it
// differs only for NaN, which ggml maps to the canonical quiet NaN 0x7E00
// (with the input's sign) instead of keeping the payload.
func ggmlFP16(f float32) uint16 {
	w := math.Float32bits(f)
	shl1 := w + w
	sign := w & 0x80000000
	if shl1 > 0xFF000000 { // NaN
		return uint16(sign>>16) | 0x7E00
	}
	// ggml rounds by adding a power of two that pushes the bits below half
	// precision out of the float32 mantissa; the two scalings first map
	// values too large for half precision to infinity.
	abs := math.Float32frombits(w &^ 0x80000000)
	base := float32(float32(abs*0x1p112) * 0x1p-110)
	bias := shl1 & 0xFF000000
	if bias < 0x71000000 {
		bias = 0x71000000
	}
	base = math.Float32frombits((bias>>1)+0x07800000) + base
	bits := math.Float32bits(base)
	nonsign := (bits>>13)&0x00007C00 + bits&0x00000FFF
	return uint16(sign>>16) | uint16(nonsign)
}

// ggmlBF16 converts f to bfloat16 as ggml's ggml_compute_fp32_to_bf16
// does: NaNs are truncated and forced quiet, everything else is rounded to
// nearest even by adding 0x7fff plus the lowest kept bit (which also rounds
// huge finite values up to infinity, as ggml does).
func ggmlBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + ((u >> 16) & 1))) >> 16)
}

// putFP16 stores f at b[0:2] as a little-endian ggml half.
func putFP16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, ggmlFP16(f)) }

// getFP16 reads the little-endian half at b[0:2] as float32.
func getFP16(b []byte) float32 { return fp16ToFP32(binary.LittleEndian.Uint16(b)) }

// absf is fabsf: it clears the sign bit, so it never changes a NaN payload.
func absf(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ 0x80000000) }

// forEachRow splits src into rows of ncols values and dst into the matching
// rows of rowBytes bytes, and calls fn on each pair in order.
func forEachRow(src []float32, ncols, rowBytes int, dst []byte, fn func(x []float32, y []byte)) {
	if ncols <= 0 {
		return
	}
	for r := 0; r+ncols <= len(src); r += ncols {
		fn(src[r:r+ncols], dst[:rowBytes])
		dst = dst[rowBytes:]
	}
}

func quantizeF16(src []float32, _ int, _ []float32, dst []byte) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], ggmlFP16(v))
	}
}

func dequantizeF16(src []byte, dst []float32) {
	dst = dst[:len(src)/2]
	for i := range dst {
		dst[i] = getFP16(src[2*i:])
	}
}

func quantizeBF16(src []float32, _ int, _ []float32, dst []byte) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], ggmlBF16(v))
	}
}

func dequantizeBF16(src []byte, dst []float32) {
	dst = dst[:len(src)/2]
	for i := range dst {
		// bfloat16 is the top half of a float32.
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

package quantize

import (
	"encoding/binary"
	"math"

	"github.com/gemmaconv/gemmaconv/ir"
)

// The legacy block types: 32 values per block, one fp16 scale (and for the
// _1 types an fp16 minimum), 4, 5 or 8 bits per value.
//
// Block layouts (little endian, as ggml-common.h declares them):
//
//	Q4_0: d f16 | qs[16]                 value j in qs[j]&15, j+16 in qs[j]>>4
//	Q4_1: d f16 | m f16 | qs[16]
//	Q5_0: d f16 | qh u32 | qs[16]        bit 4 of value j is bit j of qh
//	Q5_1: d f16 | m f16 | qh u32 | qs[16]
//	Q8_0: d f16 | qs[32] int8
//
// Without an importance matrix ggml_quantize_chunk uses the _ref row
// quantizers (round to a scale taken from the extremes); with one, Q4_0 to
// Q5_1 use ggml's *_impl quantizers, which weight the k-quant scale
// searches (makeQXQuants for the _0 types, makeQKX3Quants for the _1
// types). Q8_0 ignores it.

const (
	legacyQK = 32 // values per block (QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0)

	q4_0Bytes = 2 + legacyQK/2
	q4_1Bytes = 4 + legacyQK/2
	q5_0Bytes = 2 + 4 + legacyQK/2
	q5_1Bytes = 4 + 4 + legacyQK/2
	q8_0Bytes = 2 + legacyQK
)

func init() {
	Register(ir.Q4_0, Kernel{Quantize: quantizeQ4_0, Dequantize: dequantizeQ4_0})
	Register(ir.Q4_1, Kernel{Quantize: quantizeQ4_1, Dequantize: dequantizeQ4_1})
	Register(ir.Q5_0, Kernel{Quantize: quantizeQ5_0, Dequantize: dequantizeQ5_0})
	Register(ir.Q5_1, Kernel{Quantize: quantizeQ5_1, Dequantize: dequantizeQ5_1})
	Register(ir.Q8_0, Kernel{Quantize: quantizeQ8_0, Dequantize: dequantizeQ8_0})
}

// cvtI32 converts f to int32 the way C's float-to-integer conversion runs
// on x86-64 (cvttss2si), where ggml's reference vectors were made: it
// truncates toward zero, and NaN or out-of-range values give MinInt32.
// ggml's (int8_t)/(uint8_t) casts are this followed by keeping the low byte.
func cvtI32(f float32) int32 {
	if f >= -0x1p31 && f < 0x1p31 {
		return int32(f)
	}
	return math.MinInt32
}

// roundf is C's roundf: round half away from zero.
func roundf(f float32) float32 { return float32(math.Round(float64(f))) }

// packNibbles stores the 4-bit codes L (values j and j+16 share byte j) in
// qs, as all 32-value 4-bit block types lay them out. Like ggml it does not
// mask the low code: codes are in [0, 15] on every path.
func packNibbles(qs []byte, L []uint8) {
	for j := 0; j < legacyQK/2; j++ {
		qs[j] = L[j] | L[j+legacyQK/2]<<4
	}
}

// packQ5 stores the low 4 bits of the 5-bit codes L in qs and the fifth
// bits in the little-endian 32-bit mask qh.
func packQ5(qh, qs []byte, L *[legacyQK]uint8) {
	var h uint32
	for j := 0; j < legacyQK/2; j++ {
		x0, x1 := L[j], L[j+legacyQK/2]
		qs[j] = x0&0x0F | (x1&0x0F)<<4
		h |= uint32(x0&0x10) >> 4 << j
		h |= uint32(x1&0x10) >> 4 << (j + legacyQK/2)
	}
	binary.LittleEndian.PutUint32(qh, h)
}

// rowSigma2 is the mean square of a row, summed in float32 in order; the
// weighted quantizers scale the importance weights by sqrt(sigma2 + x*x).
func rowSigma2(x []float32) float32 {
	var sum float32
	for _, v := range x {
		sum += float32(v * v)
	}
	return sum / float32(len(x))
}

// importanceWeights fills w with qw[j]*sqrt(sigma2 + x[j]^2), the weights
// ggml's legacy *_impl quantizers give make_qx_quants/make_qkx3_quants.
func importanceWeights(w *[legacyQK]float32, x, qw []float32, sigma2 float32) {
	x, qw = x[:legacyQK], qw[:legacyQK]
	for j := range w {
		w[j] = qw[j] * float32(math.Sqrt(float64(sigma2+float32(x[j]*x[j]))))
	}
}

// weightedSymQuants is the make_qx_quants call of ggml's Q4_0 and Q5_0
// _impl quantizers (importance weights w, rmse_type 1): it sets the codes
// L in [0, 2*nmax) and returns the scale d with x ≈ d*(L-nmax).
func weightedSymQuants(nmax int, x []float32, L *[legacyQK]uint8, w *[legacyQK]float32) float32 {
	var q [legacyQK]int8 // makeQXQuants' codes, all in [0, 2*nmax)
	d := makeQXQuants(legacyQK, nmax, x, q[:], 1, w[:])
	for j, l := range q {
		L[j] = uint8(l)
	}
	return d
}

func min32(a, b int32) int32 {
	if a < b {
		return a
	}
	return b
}

func max32(a, b int32) int32 {
	if a > b {
		return a
	}
	return b
}

// symMax returns the value of largest magnitude in x (the first one on
// ties), as the _0 reference quantizers pick it: amax < |v| skips NaNs.
func symMax(x []float32) float32 {
	var amax, max float32
	for _, v := range x {
		if amax < absf(v) {
			amax, max = absf(v), v
		}
	}
	return max
}

// minMax returns the smallest and largest value of x, starting from
// ±FLT_MAX as the _1 reference quantizers do.
func minMax(x []float32) (min, max float32) {
	min, max = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < min {
			min = v
		}
		if v > max {
			max = v
		}
	}
	return min, max
}

// inverse is ggml's `d ? 1.0f/d : 0.0f`.
func inverse(d float32) float32 {
	if d != 0 {
		return 1 / d
	}
	return 0
}

// ---- Q4_0 ----

func quantizeQ4_0(src []float32, ncols int, imatrix []float32, dst []byte) {
	forEachRow(src, ncols, ncols/legacyQK*q4_0Bytes, dst, func(x []float32, y []byte) {
		var L [legacyQK]uint8
		if imatrix == nil {
			for ib := 0; ib < len(x)/legacyQK; ib++ {
				xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q4_0Bytes:(ib+1)*q4_0Bytes]
				d := symMax(xb) / -8
				id := inverse(d)
				putFP16(yb, d)
				for j, v := range xb {
					// (int8_t)(x*id + 8.5f), capped at 15.
					L[j] = uint8(min32(15, int32(int8(cvtI32(float32(v*id)+8.5)))))
				}
				packNibbles(yb[2:], L[:])
			}
			return
		}
		var w [legacyQK]float32
		sigma2 := rowSigma2(x)
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q4_0Bytes:(ib+1)*q4_0Bytes]
			importanceWeights(&w, xb, imatrix[ib*legacyQK:], sigma2)
			putFP16(yb, weightedSymQuants(8, xb, &L, &w))
			packNibbles(yb[2:], L[:])
		}
	})
}

func dequantizeQ4_0(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/q4_0Bytes; ib++ {
		b, y := src[ib*q4_0Bytes:(ib+1)*q4_0Bytes], dst[ib*legacyQK:(ib+1)*legacyQK]
		d := getFP16(b)
		for j, q := range b[2:q4_0Bytes] {
			y[j] = float32(int32(q&0x0F)-8) * d
			y[j+legacyQK/2] = float32(int32(q>>4)-8) * d
		}
	}
}

// ---- Q4_1 ----

func quantizeQ4_1(src []float32, ncols int, imatrix []float32, dst []byte) {
	forEachRow(src, ncols, ncols/legacyQK*q4_1Bytes, dst, func(x []float32, y []byte) {
		var L [legacyQK]uint8
		if imatrix == nil {
			for ib := 0; ib < len(x)/legacyQK; ib++ {
				xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q4_1Bytes:(ib+1)*q4_1Bytes]
				min, max := minMax(xb)
				d := (max - min) / 15
				id := inverse(d)
				putFP16(yb, d)
				putFP16(yb[2:], min)
				for j, v := range xb {
					L[j] = uint8(min32(15, int32(int8(cvtI32(float32((v-min)*id)+0.5)))))
				}
				packNibbles(yb[4:], L[:])
			}
			return
		}
		var w [legacyQK]float32
		var aux [legacyQK]uint8 // makeQKX3Quants scratch
		sigma2 := rowSigma2(x)
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q4_1Bytes:(ib+1)*q4_1Bytes]
			importanceWeights(&w, xb, imatrix[ib*legacyQK:], sigma2)
			d, negMin := makeQKX3Quants(legacyQK, 15, xb, w[:], L[:], aux[:], -0.9, 0.05, 36, false)
			putFP16(yb, d)
			putFP16(yb[2:], -negMin)
			packNibbles(yb[4:], L[:])
		}
	})
}

func dequantizeQ4_1(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/q4_1Bytes; ib++ {
		b, y := src[ib*q4_1Bytes:(ib+1)*q4_1Bytes], dst[ib*legacyQK:(ib+1)*legacyQK]
		d, m := getFP16(b), getFP16(b[2:])
		for j, q := range b[4:q4_1Bytes] {
			y[j] = float32(float32(q&0x0F)*d) + m
			y[j+legacyQK/2] = float32(float32(q>>4)*d) + m
		}
	}
}

// ---- Q5_0 ----

func quantizeQ5_0(src []float32, ncols int, imatrix []float32, dst []byte) {
	forEachRow(src, ncols, ncols/legacyQK*q5_0Bytes, dst, func(x []float32, y []byte) {
		var L [legacyQK]uint8
		if imatrix == nil {
			for ib := 0; ib < len(x)/legacyQK; ib++ {
				xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q5_0Bytes:(ib+1)*q5_0Bytes]
				d := symMax(xb) / -16
				id := inverse(d)
				putFP16(yb, d)
				for j, v := range xb {
					L[j] = uint8(min32(31, int32(int8(cvtI32(float32(v*id)+16.5)))))
				}
				packQ5(yb[2:6], yb[6:], &L)
			}
			return
		}
		var w [legacyQK]float32
		sigma2 := rowSigma2(x)
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q5_0Bytes:(ib+1)*q5_0Bytes]
			importanceWeights(&w, xb, imatrix[ib*legacyQK:], sigma2)
			putFP16(yb, weightedSymQuants(16, xb, &L, &w))
			packQ5(yb[2:6], yb[6:], &L)
		}
	})
}

func dequantizeQ5_0(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/q5_0Bytes; ib++ {
		b, y := src[ib*q5_0Bytes:(ib+1)*q5_0Bytes], dst[ib*legacyQK:(ib+1)*legacyQK]
		d := getFP16(b)
		qh := binary.LittleEndian.Uint32(b[2:])
		for j, q := range b[6:q5_0Bytes] {
			h0 := uint8(qh>>j<<4) & 0x10
			h1 := uint8(qh>>(j+12)) & 0x10
			y[j] = float32(int32(q&0x0F|h0)-16) * d
			y[j+legacyQK/2] = float32(int32(q>>4|h1)-16) * d
		}
	}
}

// ---- Q5_1 ----

func quantizeQ5_1(src []float32, ncols int, imatrix []float32, dst []byte) {
	forEachRow(src, ncols, ncols/legacyQK*q5_1Bytes, dst, func(x []float32, y []byte) {
		var L [legacyQK]uint8
		if imatrix == nil {
			for ib := 0; ib < len(x)/legacyQK; ib++ {
				xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q5_1Bytes:(ib+1)*q5_1Bytes]
				min, max := minMax(xb)
				d := (max - min) / 31
				id := inverse(d)
				putFP16(yb, d)
				putFP16(yb[2:], min)
				for j, v := range xb {
					// (uint8_t)(x*id + 0.5f), uncapped as in ggml.
					L[j] = uint8(cvtI32(float32((v-min)*id) + 0.5))
				}
				packQ5(yb[4:8], yb[8:], &L)
			}
			return
		}
		var w [legacyQK]float32
		var aux [legacyQK]uint8 // makeQKX3Quants scratch
		sigma2 := rowSigma2(x)
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q5_1Bytes:(ib+1)*q5_1Bytes]
			importanceWeights(&w, xb, imatrix[ib*legacyQK:], sigma2)
			d, negMin := makeQKX3Quants(legacyQK, 31, xb, w[:], L[:], aux[:], -0.9, 0.05, 36, false)
			putFP16(yb, d)
			putFP16(yb[2:], -negMin)
			packQ5(yb[4:8], yb[8:], &L)
		}
	})
}

func dequantizeQ5_1(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/q5_1Bytes; ib++ {
		b, y := src[ib*q5_1Bytes:(ib+1)*q5_1Bytes], dst[ib*legacyQK:(ib+1)*legacyQK]
		d, m := getFP16(b), getFP16(b[2:])
		qh := binary.LittleEndian.Uint32(b[4:])
		for j, q := range b[8:q5_1Bytes] {
			h0 := uint8(qh>>j<<4) & 0x10
			h1 := uint8(qh>>(j+12)) & 0x10
			y[j] = float32(float32(q&0x0F|h0)*d) + m
			y[j+legacyQK/2] = float32(float32(q>>4|h1)*d) + m
		}
	}
}

// ---- Q8_0 ----

// quantizeQ8_0 ignores imatrix: ggml's quantize_q8_0 always uses the
// reference quantizer.
func quantizeQ8_0(src []float32, ncols int, _ []float32, dst []byte) {
	forEachRow(src, ncols, ncols/legacyQK*q8_0Bytes, dst, func(x []float32, y []byte) {
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q8_0Bytes:(ib+1)*q8_0Bytes]
			var amax float32
			for _, v := range xb {
				amax = cMax(amax, absf(v))
			}
			d := amax / 127
			id := inverse(d)
			putFP16(yb, d)
			for j, v := range xb {
				yb[2+j] = byte(cvtI32(roundf(v * id)))
			}
		}
	})
}

// cMax is ggml's MAX(a, b): a > b ? a : b (so a NaN b wins).
func cMax(a, b float32) float32 {
	if a > b {
		return a
	}
	return b
}

func dequantizeQ8_0(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/q8_0Bytes; ib++ {
		b, y := src[ib*q8_0Bytes:(ib+1)*q8_0Bytes], dst[ib*legacyQK:(ib+1)*legacyQK]
		d := getFP16(b)
		for j, q := range b[2:q8_0Bytes] {
			y[j] = float32(int8(q)) * d
		}
	}
}

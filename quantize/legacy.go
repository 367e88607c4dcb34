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
// Q5_1 use the weighted scale searches below. Q8_0 ignores it.

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

// weightedSymScale is ggml's make_qx_quants for the case the legacy types
// use (importance weights given, rmse_type 1): it picks codes L in
// [0, 2*nmax) for x and returns the scale d with x ≈ d*(L-nmax), trying 18
// scales around nmax/max and keeping the best weighted least-squares fit.
func weightedSymScale(nmax int32, x []float32, L *[legacyQK]uint8, w *[legacyQK]float32) float32 {
	x = x[:legacyQK]
	var max, amax float32
	for _, v := range x {
		if ax := absf(v); ax > amax {
			amax, max = ax, v
		}
	}
	if amax < 1e-15 { // GROUP_MAX_EPS: all zero
		*L = [legacyQK]uint8{}
		return 0
	}
	code := func(iscale, v float32) int32 {
		// The product is rounded to float32 before nearestInt's add, as in C.
		return max32(-nmax, min32(nmax-1, nearestInt(float32(iscale*v))))
	}
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := code(iscale, v)
		L[i] = uint8(l + nmax)
		fl := float32(l)
		sumlx += float32(float32(w[i]*v) * fl)
		suml2 += float32(float32(w[i]*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := int32(-9); is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for i, v := range x {
			fl := float32(code(iscale, v))
			sumlx += float32(float32(w[i]*v) * fl)
			suml2 += float32(float32(w[i]*fl) * fl)
		}
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			for i, v := range x {
				L[i] = uint8(code(iscale, v) + nmax)
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// weightedAffineScale is ggml's make_qkx3_quants as the legacy _1 types
// call it (importance weights given, rmin -0.9, rdelta 0.05, 36 steps,
// squared error): it picks codes L in [0, nmax] and returns scale and min
// with x ≈ scale*L + min, min <= 0.
func weightedAffineScale(nmax int32, x []float32, L *[legacyQK]uint8, w *[legacyQK]float32) (scale, min float32) {
	const (
		rmin   float32 = -0.9
		rdelta float32 = 0.05
		nstep          = 36
	)
	x = x[:legacyQK]
	min, max := x[0], x[0]
	sumW := w[0]
	sumX := sumW * x[0]
	for i := 1; i < legacyQK; i++ {
		if x[i] < min {
			min = x[i]
		}
		if x[i] > max {
			max = x[i]
		}
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	if min > 0 {
		min = 0
	}
	if max <= min {
		*L = [legacyQK]uint8{}
		return 0, min
	}
	code := func(iscale, v, min float32) uint8 {
		return uint8(max32(0, min32(nmax, nearestInt(float32(iscale*(v-min))))))
	}
	iscale := float32(nmax) / (max - min)
	scale = 1 / iscale
	var bestMad float32
	for i, v := range x {
		L[i] = code(iscale, v, min)
		diff := float32(scale*float32(L[i])) + min - v
		bestMad += float32(w[i] * float32(diff*diff))
	}
	var aux [legacyQK]uint8
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + float32(nmax)) / (max - min)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := code(iscale, v, min)
			aux[i] = l
			fl := float32(l)
			sumL += float32(w[i] * fl)
			sumL2 += float32(float32(w[i]*fl) * fl)
			sumXL += float32(float32(w[i]*fl) * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var mad float32
			for i, v := range x {
				diff := float32(thisScale*float32(aux[i])) + thisMin - v
				mad += float32(w[i] * float32(diff*diff))
			}
			if mad < bestMad {
				*L = aux
				bestMad = mad
				scale = thisScale
				min = thisMin
			}
		}
	}
	return scale, min
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
			putFP16(yb, weightedSymScale(8, xb, &L, &w))
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
		sigma2 := rowSigma2(x)
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q4_1Bytes:(ib+1)*q4_1Bytes]
			importanceWeights(&w, xb, imatrix[ib*legacyQK:], sigma2)
			d, min := weightedAffineScale(15, xb, &L, &w)
			putFP16(yb, d)
			putFP16(yb[2:], min)
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
			putFP16(yb, weightedSymScale(16, xb, &L, &w))
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
		sigma2 := rowSigma2(x)
		for ib := 0; ib < len(x)/legacyQK; ib++ {
			xb, yb := x[ib*legacyQK:(ib+1)*legacyQK], y[ib*q5_1Bytes:(ib+1)*q5_1Bytes]
			importanceWeights(&w, xb, imatrix[ib*legacyQK:], sigma2)
			d, min := weightedAffineScale(31, xb, &L, &w)
			putFP16(yb, d)
			putFP16(yb[2:], min)
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

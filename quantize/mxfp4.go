package quantize

import (
	"math"

	"github.com/gemmaconv/gemmaconv/ir"
)

// MXFP4 (OCP microscaling FP4): 32 values share one E8M0 scale (a bare
// power-of-two exponent) and each value is an E2M1 float.
//
// Block layout (as ggml-common.h declares it):
//
//	MXFP4: e u8 (E8M0) | qs[16]    value j in qs[j]&15, j+16 in qs[j]>>4
//
// ggml stores E2M1 codes through kvaluesMXFP4, the E2M1 values doubled, and
// so multiplies them by half the scale. ggml's quantize_mxfp4 ignores the
// importance matrix.

const (
	mxfp4QK    = 32
	mxfp4Bytes = 1 + mxfp4QK/2
)

// kvaluesMXFP4 is ggml's kvalues_mxfp4: twice the E2M1 value of each code.
var kvaluesMXFP4 = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

func init() {
	Register(ir.MXFP4, Kernel{Quantize: quantizeMXFP4, Dequantize: dequantizeMXFP4})
}

// e8m0Half is ggml's ggml_e8m0_to_fp32_half: 2^(e-128), built from bits
// (subnormal for e < 2).
func e8m0Half(e uint8) float32 {
	if e < 2 {
		return math.Float32frombits(0x00200000 << e)
	}
	return math.Float32frombits(uint32(e-1) << 23)
}

// bestIndexMXFP4 is ggml's best_index_mxfp4: the code whose value times d
// is nearest x, the first one on ties. ggml tries all 16 codes; codes of
// the sign opposite to x are never strictly nearer than code 0 (value 0),
// and neither is code 8 (-0), so only code 0 and x's side are tried.
func bestIndexMXFP4(x, d float32) uint8 {
	lo, hi := 1, 8
	if x < 0 {
		lo, hi = 9, 16
	}
	best := 0
	bestErr := absf(float32(float32(kvaluesMXFP4[0])*d) - x)
	for i := lo; i < hi; i++ {
		if err := absf(float32(float32(kvaluesMXFP4[i])*d) - x); err < bestErr {
			best, bestErr = i, err
		}
	}
	return uint8(best)
}

// mxfp4Exponent is ggml's shared exponent for a block whose largest
// magnitude is amax: (uint8_t)(floorf(log2f(amax)) - 2 + 127), which puts
// amax in the top E2M1 binade (4..6 times 2^(e-127)); 0 for amax = 0.
func mxfp4Exponent(amax float32) uint8 {
	if !(amax > 0) {
		return 0
	}
	// log2f is the float64 log2 rounded to float32. Only its floor
	// matters, which changes where log2f of a value just below 2^k rounds
	// up to k; this matches glibc's log2f on the top 2^14 floats below
	// every power of two (see TestMXFP4Exponent).
	l := float32(math.Floor(float64(float32(math.Log2(float64(amax))))))
	return uint8(cvtI32(l - 2 + 127))
}

func quantizeMXFP4(src []float32, ncols int, _ []float32, dst []byte) {
	forEachRow(src, ncols, ncols/mxfp4QK*mxfp4Bytes, dst, func(x []float32, y []byte) {
		for ib := 0; ib < len(x)/mxfp4QK; ib++ {
			xb, yb := x[ib*mxfp4QK:(ib+1)*mxfp4QK], y[ib*mxfp4Bytes:(ib+1)*mxfp4Bytes]
			var amax float32
			for _, v := range xb {
				if amax < absf(v) {
					amax = absf(v)
				}
			}
			e := mxfp4Exponent(amax)
			d := e8m0Half(e)
			yb[0] = e
			for j := 0; j < mxfp4QK/2; j++ {
				yb[1+j] = bestIndexMXFP4(xb[j], d) | bestIndexMXFP4(xb[j+mxfp4QK/2], d)<<4
			}
		}
	})
}

func dequantizeMXFP4(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/mxfp4Bytes; ib++ {
		b, y := src[ib*mxfp4Bytes:(ib+1)*mxfp4Bytes], dst[ib*mxfp4QK:(ib+1)*mxfp4QK]
		d := e8m0Half(b[0])
		for j, q := range b[1:mxfp4Bytes] {
			y[j] = float32(kvaluesMXFP4[q&0x0F]) * d
			y[j+mxfp4QK/2] = float32(kvaluesMXFP4[q>>4]) * d
		}
	}
}

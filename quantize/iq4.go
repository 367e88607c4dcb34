package quantize

import (
	"encoding/binary"
	"math"

	"github.com/gemmaconv/gemmaconv/ir"
)

// The 4-bit non-linear types: each 4-bit code indexes kvaluesIQ4NL, a fixed
// non-uniform grid, times a block scale.
//
// Block layouts (little endian, as ggml-common.h declares them):
//
//	IQ4_NL (32 values):  d f16 | qs[16]
//	IQ4_XS (256 values): d f16 | scales_h u16 | scales_l[4] | qs[128]
//
// qs packs each 32 values as the legacy types do (value j in the low nibble
// of byte j, value j+16 in the high nibble). IQ4_XS gives each of its eight
// 32-value sub-blocks a 6-bit scale ls, stored as ls+32 split into a low
// nibble in scales_l (two per byte, even sub-blocks low) and two high bits
// in scales_h; the sub-block's step is d*(ls-32).
//
// ggml_quantize_chunk quantizes both through quantize_row_iq4_nl_impl with
// ntry = 7, weighting by the importance matrix when given and by x*x when
// not; this file follows that path for both cases.

const (
	iq4nlQK    = 32
	iq4nlBytes = 2 + iq4nlQK/2
	iq4xsQK    = 256
	iq4xsBytes = 2 + 2 + iq4xsQK/64 + iq4xsQK/2
	iq4NTry    = 7 // ggml's ntry for quantize_iq4_nl and quantize_iq4_xs
)

// kvaluesIQ4NL is ggml's kvalues_iq4nl grid.
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

func init() {
	Register(ir.IQ4_NL, Kernel{Quantize: quantizeIQ4NL, Dequantize: dequantizeIQ4NL})
	Register(ir.IQ4_XS, Kernel{Quantize: quantizeIQ4XS, Dequantize: dequantizeIQ4XS})
}

// iq4Nearest maps floor(2x)+256, for x in (-128, 128), to the index of
// the kvaluesIQ4NL entry nearest x: the number of midpoints between
// neighbouring grid values that are <= x. The midpoints are multiples of
// 1/2, so floor(2x) decides every comparison.
var iq4Nearest = func() (t [512]uint8) {
	v := &kvaluesIQ4NL
	for i := range t {
		for k := 0; k+1 < len(v); k++ {
			if int(v[k])+int(v[k+1]) <= i-256 { // 2*midpoint <= floor(2x)
				t[i]++
			}
		}
	}
	return t
}()

// bestIndexIQ4 is ggml's best_index_int8 over kvaluesIQ4NL: the index of
// the grid value nearest x, the upper one on ties. ggml bisects and then
// compares x-v[mu-1] < v[mu]-x in float32; near a midpoint both
// differences are exact (|x| >= 4.5 there), and away from one rounding
// cannot flip the comparison, so a table lookup on floor(2x) gives the
// same index. A NaN ends ggml's bisection at the top.
func bestIndexIQ4(x float32) uint8 {
	switch {
	case x != x:
		return 15
	case x <= -128:
		return 0
	case x >= 128:
		return 15
	}
	// float64(x)*2 is exact; adding 256 can drop bits only below 2^-44,
	// which never moves floor(2x) across a midpoint (a float32 within
	// that distance of a midpoint equals it).
	return iq4Nearest[int(float64(x)*2+256)]
}

// iq4BlockScale finds the scale of one 32-value block xb with weights w
// (ggml's per-block search in quantize_row_iq4_nl_impl): the least-squares
// scale for codes chosen at max/-127, improved over 2*ntry+1 alternatives.
// It returns 0 for an all-zero block.
func iq4BlockScale(xb []float32, w *[32]float32) float32 {
	xb = xb[:32]
	var amax, max float32
	for _, v := range xb {
		if ax := absf(v); ax > amax {
			amax, max = ax, v
		}
	}
	if amax < 1e-15 { // GROUP_MAX_EPS
		return 0
	}
	kv := &kvaluesIQ4NL
	fit := func(id float32) (sumqx, sumq2 float32) {
		for j, v := range xb {
			q := float32(kv[bestIndexIQ4(float32(id*v))])
			sumqx += float32(float32(w[j]*q) * v)
			sumq2 += float32(float32(w[j]*q) * q)
		}
		return sumqx, sumq2
	}
	d := -max / float32(kv[0])
	sumqx, sumq2 := fit(1 / d)
	d = 0
	if sumq2 > 0 {
		d = sumqx / sumq2
	}
	best := d * sumqx
	for itry := -iq4NTry; itry <= iq4NTry; itry++ {
		sumqx, sumq2 = fit(float32(itry+int(kv[0])) / max)
		if sumq2 > 0 && sumqx*sumqx > best*sumq2 {
			d = sumqx / sumq2
			best = d * sumqx
		}
	}
	return d
}

// iq4Weights fills w for one 32-value block: the importance weights scaled
// by sqrt(sigma2 + x^2) when qw is given, else x^2.
func iq4Weights(w *[32]float32, xb, qw []float32, sigma2 float32) {
	xb = xb[:32]
	if qw == nil {
		for j, v := range xb {
			w[j] = v * v
		}
		return
	}
	qw = qw[:32]
	for j, v := range xb {
		w[j] = qw[j] * float32(math.Sqrt(float64(sigma2+float32(v*v))))
	}
}

// iq4Sigma2 is twice the mean square of the super block x, summed in
// float32 in order.
func iq4Sigma2(x []float32) float32 {
	var s float32
	for _, v := range x {
		s += float32(v * v)
	}
	// Rounded here: once inlined, a bare product could fuse with the
	// caller's sigma2 + x*x.
	return float32(s * (2 / float32(len(x))))
}

// ---- IQ4_NL ----

func quantizeIQ4NL(src []float32, ncols int, imatrix []float32, dst []byte) {
	forEachRow(src, ncols, ncols/iq4nlQK*iq4nlBytes, dst, func(x []float32, y []byte) {
		var (
			w [32]float32
			L [iq4nlQK]uint8
		)
		for ib := 0; ib < len(x)/iq4nlQK; ib++ {
			xb, yb := x[ib*iq4nlQK:(ib+1)*iq4nlQK], y[ib*iq4nlBytes:(ib+1)*iq4nlBytes]
			var qw []float32
			if imatrix != nil {
				qw = imatrix[ib*iq4nlQK:]
			}
			iq4Weights(&w, xb, qw, iq4Sigma2(xb))
			d := iq4BlockScale(xb, &w)
			putFP16(yb, d)
			// Codes are re-chosen with the final (unrounded) scale.
			id := inverse(d)
			for j, v := range xb {
				L[j] = bestIndexIQ4(float32(id * v))
			}
			packNibbles(yb[2:], L[:])
		}
	})
}

func dequantizeIQ4NL(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/iq4nlBytes; ib++ {
		b, y := src[ib*iq4nlBytes:(ib+1)*iq4nlBytes], dst[ib*iq4nlQK:(ib+1)*iq4nlQK]
		d := getFP16(b)
		for j, q := range b[2:iq4nlBytes] {
			y[j] = d * float32(kvaluesIQ4NL[q&0x0F])
			y[j+iq4nlQK/2] = d * float32(kvaluesIQ4NL[q>>4])
		}
	}
}

// ---- IQ4_XS ----

func quantizeIQ4XS(src []float32, ncols int, imatrix []float32, dst []byte) {
	forEachRow(src, ncols, ncols/iq4xsQK*iq4xsBytes, dst, func(x []float32, y []byte) {
		var (
			w      [32]float32
			L      [32]uint8
			scales [iq4xsQK / 32]float32
		)
		for ibl := 0; ibl < len(x)/iq4xsQK; ibl++ {
			xs, ys := x[ibl*iq4xsQK:(ibl+1)*iq4xsQK], y[ibl*iq4xsBytes:(ibl+1)*iq4xsBytes]
			sigma2 := iq4Sigma2(xs)
			var maxScale, amaxScale float32
			for ib := range scales {
				xb := xs[ib*32 : (ib+1)*32]
				var qw []float32
				if imatrix != nil {
					qw = imatrix[ibl*iq4xsQK+ib*32:]
				}
				iq4Weights(&w, xb, qw, sigma2)
				scales[ib] = iq4BlockScale(xb, &w)
				if a := absf(scales[ib]); a > amaxScale {
					amaxScale, maxScale = a, scales[ib]
				}
			}
			// Sub-block scales become 6-bit multiples of the super-block
			// scale d; codes are re-chosen with each rounded step d*l.
			d := -maxScale / 32
			putFP16(ys, d)
			id := inverse(d)
			var scalesH uint16
			scalesL, qs := ys[4:8], ys[8:]
			for ib, s := range scales {
				l := max32(-32, min32(31, nearestInt(float32(id*s))))
				idl := inverse(d * float32(l))
				for j, v := range xs[ib*32 : (ib+1)*32] {
					L[j] = bestIndexIQ4(float32(idl * v))
				}
				packNibbles(qs[ib*16:], L[:])
				l += 32
				if ib%2 == 0 {
					scalesL[ib/2] = uint8(l & 0xf)
				} else {
					scalesL[ib/2] |= uint8(l&0xf) << 4
				}
				scalesH |= uint16(l>>4) << (2 * (ib % 8))
			}
			binary.LittleEndian.PutUint16(ys[2:], scalesH)
		}
	})
}

func dequantizeIQ4XS(src []byte, dst []float32) {
	for ibl := 0; ibl < len(src)/iq4xsBytes; ibl++ {
		b, y := src[ibl*iq4xsBytes:(ibl+1)*iq4xsBytes], dst[ibl*iq4xsQK:(ibl+1)*iq4xsQK]
		d := getFP16(b)
		scalesH := binary.LittleEndian.Uint16(b[2:])
		for ib := 0; ib < iq4xsQK/32; ib++ {
			ls := int32(b[4+ib/2]>>(4*(ib%2)))&0xf | int32(scalesH>>(2*ib)&3)<<4
			dl := d * float32(ls-32)
			yb, qs := y[ib*32:(ib+1)*32], b[8+ib*16:8+(ib+1)*16]
			for j, q := range qs {
				yb[j] = dl * float32(kvaluesIQ4NL[q&0x0F])
				yb[j+16] = dl * float32(kvaluesIQ4NL[q>>4])
			}
		}
	}
}

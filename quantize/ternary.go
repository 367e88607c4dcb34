package quantize

import (
	"math"

	"github.com/gemmaconv/gemmaconv/ir"
)

// The ternary types (BitNet b1.58, TriLMs): every value becomes -1, 0 or +1
// times the block's absolute maximum d, in 256-value blocks.
//
// Block layouts (little endian, as ggml-common.h declares them):
//
//	TQ1_0: qs[48] | qh[4] | d f16    five trits per byte (1.6875 bpw)
//	TQ2_0: qs[64] | d f16            four 2-bit codes per byte
//
// TQ1_0 packs trits t0..t4 (each 0, 1, 2 for -1, 0, +1) as the base-3
// number t0 t1 t2 t3 t4, scaled to a byte by ceil(n*256/243) so that the
// digits come back out by multiplying by 3 and keeping the high byte. qs[m]
// for m < 32 holds values m+32n (n = 0..4) of the first 160; qs[32+m] holds
// values 160+m+16n of the next 80; qh[j] holds values 240+j+4n (n = 0..3)
// with a zero fifth trit. TQ2_0's byte j+m (j = 0, 32) holds value
// 4j+m+32n in bits 2n..2n+1.
//
// ggml's quantize_tq1_0 and quantize_tq2_0 ignore the importance matrix.

const (
	tqQK       = 256
	tq1_0Bytes = (tqQK-4*tqQK/64)/5 + tqQK/64 + 2
	tq2_0Bytes = tqQK/4 + 2
)

func init() {
	Register(ir.TQ1_0, Kernel{Quantize: quantizeTQ1_0, Dequantize: dequantizeTQ1_0})
	Register(ir.TQ2_0, Kernel{Quantize: quantizeTQ2_0, Dequantize: dequantizeTQ2_0})
}

// lroundf is glibc's lroundf on x86-64: round half away from zero, and
// LONG_MIN for NaN and values out of range.
func lroundf(f float32) int64 {
	if f > -0x1p63 && f < 0x1p63 {
		return int64(math.Round(float64(f)))
	}
	return math.MinInt64
}

// trit is ggml's `lroundf(x*id) + 1` stored in an int: 0, 1 or 2 for a
// value in [-1, 1] (int truncation of the long as in C otherwise).
func trit(v, id float32) int32 { return int32(lroundf(v*id) + 1) }

// ternaryScale returns the block's absolute maximum d and 1/d (0 for d = 0).
func ternaryScale(x []float32) (d, id float32) {
	for _, v := range x {
		d = cMax(d, absf(v))
	}
	return d, inverse(d)
}

// packTrits packs the trits of the n values x[0], x[stride], ... (the
// first most significant) into one byte: their base-3 number, accumulated
// in a byte as ggml does, mapped to ceil(q*256/243).
func packTrits(x []float32, stride, n int, id float32) byte {
	var q uint8
	for k := 0; k < n; k++ {
		q = q*3 + uint8(trit(x[k*stride], id))
	}
	if n == 4 {
		q *= 3 // the unused fifth trit is the least significant
	}
	return uint8((uint32(q)*256 + (243 - 1)) / 243)
}

// ---- TQ1_0 ----

func quantizeTQ1_0(src []float32, ncols int, _ []float32, dst []byte) {
	forEachRow(src, ncols, ncols/tqQK*tq1_0Bytes, dst, func(x []float32, y []byte) {
		for ib := 0; ib < len(x)/tqQK; ib++ {
			xb, yb := x[ib*tqQK:(ib+1)*tqQK], y[ib*tq1_0Bytes:(ib+1)*tq1_0Bytes]
			d, id := ternaryScale(xb)
			putFP16(yb[52:], d)
			for m := 0; m < 32; m++ {
				yb[m] = packTrits(xb[m:], 32, 5, id)
			}
			for m := 0; m < 16; m++ {
				yb[32+m] = packTrits(xb[160+m:], 16, 5, id)
			}
			for j := 0; j < 4; j++ {
				yb[48+j] = packTrits(xb[240+j:], 4, 4, id)
			}
		}
	})
}

var pow3 = [5]uint8{1, 3, 9, 27, 81}

// unpackTrit returns trit n (0 most significant) of a packed byte as -1, 0
// or +1: multiplying by 3^n drops the higher trits modulo 256, and the next
// one is the high byte of three times the rest.
func unpackTrit(b byte, n int) float32 {
	q := b * pow3[n]
	return float32(int32(uint16(q)*3>>8) - 1)
}

func dequantizeTQ1_0(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/tq1_0Bytes; ib++ {
		b, y := src[ib*tq1_0Bytes:(ib+1)*tq1_0Bytes], dst[ib*tqQK:(ib+1)*tqQK]
		d := getFP16(b[52:])
		for n := 0; n < 5; n++ {
			for m := 0; m < 32; m++ {
				y[32*n+m] = unpackTrit(b[m], n) * d
			}
			for m := 0; m < 16; m++ {
				y[160+16*n+m] = unpackTrit(b[32+m], n) * d
			}
		}
		for n := 0; n < 4; n++ {
			for j := 0; j < 4; j++ {
				y[240+4*n+j] = unpackTrit(b[48+j], n) * d
			}
		}
	}
}

// ---- TQ2_0 ----

func quantizeTQ2_0(src []float32, ncols int, _ []float32, dst []byte) {
	forEachRow(src, ncols, ncols/tqQK*tq2_0Bytes, dst, func(x []float32, y []byte) {
		for ib := 0; ib < len(x)/tqQK; ib++ {
			xb, yb := x[ib*tqQK:(ib+1)*tqQK], y[ib*tq2_0Bytes:(ib+1)*tq2_0Bytes]
			d, id := ternaryScale(xb)
			putFP16(yb[64:], d)
			for j := 0; j < 64; j += 32 {
				for m := 0; m < 32; m++ {
					var q uint8
					for n := 0; n < 4; n++ {
						q += uint8(trit(xb[4*j+m+32*n], id)&3) << (2 * n)
					}
					yb[j+m] = q
				}
			}
		}
	})
}

func dequantizeTQ2_0(src []byte, dst []float32) {
	for ib := 0; ib < len(src)/tq2_0Bytes; ib++ {
		b, y := src[ib*tq2_0Bytes:(ib+1)*tq2_0Bytes], dst[ib*tqQK:(ib+1)*tqQK]
		d := getFP16(b[64:])
		for j := 0; j < 64; j += 32 {
			for l := 0; l < 4; l++ {
				for m := 0; m < 32; m++ {
					q := int32(b[j+m]>>(2*l)) & 3
					y[4*j+32*l+m] = float32(q-1) * d
				}
			}
		}
	}
}

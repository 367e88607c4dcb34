package quantize

import "github.com/gemmaconv/gemmaconv/ir"

// K-quants: super-blocks of qkK values with 4- to 8-bit sub-block scales,
// bit-exact with ggml's quantize_q2_K .. quantize_q6_K. As in ggml, rows
// without an importance matrix go through the _ref quantizer and rows with
// one through the _impl quantizer; the two search differently, so they
// produce different bytes.

// qkK is ggml's QK_K, the super-block size of every k-quant.
const qkK = 256

// Byte layouts of the blocks (ggml-common.h). Half floats are little endian.
const (
	// block_q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
	q2KScales, q2KQs, q2KD, q2KDmin, q2KSize = 0, 16, 80, 82, 84
	// block_q3_K: hmask[32], qs[64], scales[12] (6-bit, packed), d.
	q3KHmask, q3KQs, q3KScales, q3KD, q3KSize = 0, 32, 96, 108, 110
	// block_q4_K: d, dmin, scales[12] (6-bit scales and mins), qs[128].
	q4KD, q4KDmin, q4KScales, q4KQs, q4KSize = 0, 2, 4, 16, 144
	// block_q5_K: d, dmin, scales[12], qh[32], qs[128].
	q5KD, q5KDmin, q5KScales, q5KQh, q5KQs, q5KSize = 0, 2, 4, 16, 48, 176
	// block_q6_K: ql[128], qh[64], scales[16] (int8), d.
	q6KQl, q6KQh, q6KScales, q6KD, q6KSize = 0, 128, 192, 208, 210
)

func init() {
	Register(ir.Q2_K, Kernel{Quantize: kQuantizer(q2KSize, quantizeBlockQ2K, quantizeBlockQ2KImpl), Dequantize: dequantizeQ2K})
	Register(ir.Q3_K, Kernel{Quantize: kQuantizer(q3KSize, quantizeBlockQ3K, quantizeBlockQ3KImpl), Dequantize: dequantizeQ3K})
	Register(ir.Q4_K, Kernel{Quantize: kQuantizer(q4KSize, quantizeBlockQ4K, quantizeBlockQ4KImpl), Dequantize: dequantizeQ4K})
	Register(ir.Q5_K, Kernel{Quantize: kQuantizer(q5KSize, quantizeBlockQ5K, quantizeBlockQ5KImpl), Dequantize: dequantizeQ5K})
	Register(ir.Q6_K, Kernel{Quantize: kQuantizer(q6KSize, quantizeBlockQ6K, quantizeBlockQ6KImpl), Dequantize: dequantizeQ6K})
}

// kScratch holds the per-block working arrays, allocated once per call so
// the block loops do not allocate.
type kScratch struct {
	L       [qkK]uint8
	Li      [qkK]int8
	Laux    [32]uint8
	Ls, Lm  [qkK / 16]uint8
	Lsi     [qkK / 16]int8
	weights [32]float32
	scales  [qkK / 16]float32
	mins    [qkK / 16]float32
	sw      [qkK / 16]float32
}

// kBlockFunc quantizes one super-block x (qkK values) into y. qw holds the
// block's importance weights and is nil for the _ref quantizers.
type kBlockFunc func(x []float32, y []byte, qw []float32, s *kScratch)

// kQuantizer builds a Kernel.Quantize from the two block quantizers,
// dispatching as ggml_quantize_chunk does: ref without an importance
// matrix, impl with one, whose weights restart at every row.
func kQuantizer(blockBytes int, ref, impl kBlockFunc) func(src []float32, ncols int, imatrix []float32, dst []byte) {
	return func(src []float32, ncols int, imatrix []float32, dst []byte) {
		var s kScratch
		nb := len(src) / qkK
		if imatrix == nil {
			for i := 0; i < nb; i++ {
				ref(src[i*qkK:(i+1)*qkK], dst[i*blockBytes:(i+1)*blockBytes], nil, &s)
			}
			return
		}
		perRow := ncols / qkK
		for i := 0; i < nb; i++ {
			c := (i % perRow) * qkK
			impl(src[i*qkK:(i+1)*qkK], dst[i*blockBytes:(i+1)*blockBytes], imatrix[c:c+qkK], &s)
		}
	}
}

// packQ2Bits stores 256 two-bit values as ggml does for Q2_K and Q3_K: byte
// l of each 32-byte group holds elements l, l+32, l+64, l+96 of its 128.
func packQ2Bits[T uint8 | int8](L []T, qs []byte) {
	for j := 0; j < qkK; j += 128 {
		for l := 0; l < 32; l++ {
			qs[j/4+l] = uint8(L[j+l]) | uint8(L[j+l+32])<<2 | uint8(L[j+l+64])<<4 | uint8(L[j+l+96])<<6
		}
	}
}

// --- Q2_K ---

// quantizeBlockQ2K is quantize_row_q2_K_ref for one block.
func quantizeBlockQ2K(x []float32, y []byte, _ []float32, s *kScratch) {
	const q4scale = float32(15)
	L := s.L[:]
	var maxScale, maxMin float32
	for j := 0; j < qkK/16; j++ {
		xs := x[16*j : 16*j+16]
		for l, v := range xs {
			s.weights[l] = absf(v)
		}
		s.scales[j], s.mins[j] = makeQKX2Quants(16, 3, xs, s.weights[:16], L[16*j:16*j+16], s.Laux[:16], -0.5, 0.1, 15, true)
		if s.scales[j] > maxScale {
			maxScale = s.scales[j]
		}
		if s.mins[j] > maxMin {
			maxMin = s.mins[j]
		}
	}
	sc := y[q2KScales : q2KScales+16]
	if maxScale > 0 {
		iscale := q4scale / maxScale
		for j := range sc {
			sc[j] = uint8(nearestInt(float32(iscale * s.scales[j])))
		}
		putFP16(y[q2KD:], maxScale/q4scale)
	} else {
		clear(sc)
		putFP16(y[q2KD:], 0)
	}
	if maxMin > 0 {
		iscale := q4scale / maxMin
		for j := range sc {
			sc[j] |= uint8(nearestInt(float32(iscale*s.mins[j])) << 4)
		}
		putFP16(y[q2KDmin:], maxMin/q4scale)
	} else {
		putFP16(y[q2KDmin:], 0)
	}
	requantizeQ2K(x, y, L)
	packQ2Bits(L, y[q2KQs:q2KQs+64])
}

// requantizeQ2K rounds x again against the block's stored (half-precision)
// scales and mins, as both Q2_K quantizers finish.
func requantizeQ2K(x []float32, y []byte, L []uint8) {
	dAll, mAll := getFP16(y[q2KD:]), getFP16(y[q2KDmin:])
	for j := 0; j < qkK/16; j++ {
		sc := y[q2KScales+j]
		d := dAll * float32(sc&0xF)
		if d == 0 {
			continue
		}
		dm := float32(mAll * float32(sc>>4)) // no FMA into x + dm
		for ii := 0; ii < 16; ii++ {
			l := nearestInt(float32((x[16*j+ii] + dm) / d))
			L[16*j+ii] = uint8(clampInt32(l, 0, 3))
		}
	}
}

// quantizeBlockQ2KImpl is quantize_row_q2_K_impl for one block.
func quantizeBlockQ2KImpl(x []float32, y []byte, qw []float32, s *kScratch) {
	L := s.L[:]
	var sumx2 float32
	for _, v := range x[:qkK] {
		sumx2 += float32(v * v)
	}
	sigma2 := float32(sumx2 / qkK) // no FMA with the x*x added to it
	for j := 0; j < qkK/16; j++ {
		xs := x[16*j : 16*j+16]
		w := s.weights[:16]
		for l, v := range xs {
			w[l] = qw[16*j+l] * sqrt32(sigma2+float32(v*v))
		}
		s.sw[j] = 0
		for _, v := range w {
			s.sw[j] += v
		}
		s.scales[j], s.mins[j] = makeQKX3Quants(16, 3, xs, w, L[16*j:16*j+16], s.Laux[:16], -0.9, 0.05, 36, false)
	}
	dm := makeQPQuants(qkK/16, 15, s.scales[:], s.Ls[:], s.sw[:])
	mm := makeQPQuants(qkK/16, 15, s.mins[:], s.Lm[:], s.sw[:])
	putFP16(y[q2KD:], dm)
	putFP16(y[q2KDmin:], mm)
	for j := 0; j < qkK/16; j++ {
		y[q2KScales+j] = s.Ls[j] | s.Lm[j]<<4
	}
	requantizeQ2K(x, y, L)
	packQ2Bits(L, y[q2KQs:q2KQs+64])
}

// dequantizeQ2K is dequantize_row_q2_K.
func dequantizeQ2K(src []byte, dst []float32) {
	for b := 0; b < len(src)/q2KSize; b++ {
		blk := src[b*q2KSize : (b+1)*q2KSize]
		y := dst[b*qkK : (b+1)*qkK]
		d, mn := getFP16(blk[q2KD:]), getFP16(blk[q2KDmin:])
		is, o := 0, 0
		for n := 0; n < qkK; n += 128 {
			q := blk[q2KQs+n/4 : q2KQs+n/4+32]
			for shift := 0; shift < 8; shift += 2 {
				for half := 0; half < 2; half++ {
					sc := blk[q2KScales+is]
					is++
					dl, ml := d*float32(sc&0xF), float32(mn*float32(sc>>4)) // ml: no FMA
					for l := 0; l < 16; l++ {
						y[o] = float32(dl*float32((q[16*half+l]>>shift)&3)) - ml
						o++
					}
				}
			}
		}
	}
}

// --- Q3_K ---

// packQ3Scales stores the 16 six-bit scales l (0..63) of a Q3_K block:
// low nibbles in bytes 0..7, high bit pairs in bytes 8..11.
func packQ3Scales(sc []byte, j int, l int8) {
	if j < 8 {
		sc[j] = uint8(l & 0xF)
	} else {
		sc[j-8] |= uint8((l & 0xF) << 4)
	}
	l >>= 4
	sc[j%4+8] |= uint8(l << (2 * (j / 4)))
}

// q3Scale reads back sub-block j's signed scale from packed Q3_K scales.
func q3Scale(sc []byte, j int) int8 {
	var lo uint8
	if j < 8 {
		lo = sc[j] & 0xF
	} else {
		lo = sc[j-8] >> 4
	}
	hi := (sc[8+j%4] >> (2 * (j / 4))) & 3
	return int8(lo|hi<<4) - 32
}

// finishQ3K rounds x against the stored scales and writes hmask and qs,
// the common tail of both Q3_K quantizers.
func finishQ3K(x []float32, y []byte, L []int8) {
	sc := y[q3KScales : q3KScales+12]
	dAll := getFP16(y[q3KD:])
	for j := 0; j < qkK/16; j++ {
		d := dAll * float32(q3Scale(sc, j))
		if d == 0 {
			continue
		}
		for ii := 0; ii < 16; ii++ {
			l := nearestInt(float32(x[16*j+ii] / d))
			L[16*j+ii] = int8(clampInt32(l, -4, 3) + 4)
		}
	}
	hmask := y[q3KHmask : q3KHmask+32]
	clear(hmask)
	// The high bit of element j goes to bit j/32 of hmask[j%32].
	m, hm := 0, uint8(1)
	for j := 0; j < qkK; j++ {
		if L[j] > 3 {
			hmask[m] |= hm
			L[j] -= 4
		}
		if m++; m == qkK/8 {
			m, hm = 0, hm<<1
		}
	}
	packQ2Bits(L, y[q3KQs:q3KQs+64])
}

// quantizeBlockQ3K is quantize_row_q3_K_ref for one block.
func quantizeBlockQ3K(x []float32, y []byte, _ []float32, s *kScratch) {
	L := s.Li[:]
	var maxScale, amax float32
	for j := 0; j < qkK/16; j++ {
		s.scales[j] = makeQ3Quants(16, 4, x[16*j:16*j+16], L[16*j:16*j+16], true)
		if a := absf(s.scales[j]); a > amax {
			amax, maxScale = a, s.scales[j]
		}
	}
	sc := y[q3KScales : q3KScales+12]
	clear(sc)
	if maxScale != 0 {
		iscale := -32 / maxScale
		for j := 0; j < qkK/16; j++ {
			l := int8(nearestInt(float32(iscale * s.scales[j])))
			l = int8(clampInt32(int32(l), -32, 31) + 32)
			packQ3Scales(sc, j, l)
		}
		putFP16(y[q3KD:], 1/iscale)
	} else {
		putFP16(y[q3KD:], 0)
	}
	finishQ3K(x, y, L)
}

// quantizeBlockQ3KImpl is quantize_row_q3_K_impl for one block.
func quantizeBlockQ3KImpl(x []float32, y []byte, qw []float32, s *kScratch) {
	L := s.Li[:]
	var sumx2 float32
	for _, v := range x[:qkK] {
		sumx2 += float32(v * v)
	}
	sigma2 := float32(2 * sumx2 / qkK) // no FMA with the x*x added to it
	for j := 0; j < qkK/16; j++ {
		xs := x[16*j : 16*j+16]
		w := s.weights[:16]
		for l, v := range xs {
			w[l] = qw[16*j+l] * sqrt32(sigma2+float32(v*v))
		}
		var sumw float32
		for _, v := range w {
			sumw += v
		}
		s.sw[j] = sumw
		s.scales[j] = makeQXQuants(16, 4, xs, L[16*j:16*j+16], 1, w)
	}
	sc := y[q3KScales : q3KScales+12]
	clear(sc)
	dBlock := makeQXQuants(qkK/16, 32, s.scales[:], s.Lsi[:], 1, s.sw[:])
	for j := 0; j < qkK/16; j++ {
		packQ3Scales(sc, j, s.Lsi[j])
	}
	putFP16(y[q3KD:], dBlock)
	finishQ3K(x, y, L)
}

// dequantizeQ3K is dequantize_row_q3_K.
func dequantizeQ3K(src []byte, dst []float32) {
	for b := 0; b < len(src)/q3KSize; b++ {
		blk := src[b*q3KSize : (b+1)*q3KSize]
		y := dst[b*qkK : (b+1)*qkK]
		dAll := getFP16(blk[q3KD:])
		sc := blk[q3KScales : q3KScales+12]
		hm := blk[q3KHmask : q3KHmask+32]
		m := uint8(1)
		is, o := 0, 0
		for n := 0; n < qkK; n += 128 {
			q := blk[q3KQs+n/4 : q3KQs+n/4+32]
			for shift := 0; shift < 8; shift += 2 {
				for half := 0; half < 2; half++ {
					dl := dAll * float32(q3Scale(sc, is))
					is++
					for l := 16 * half; l < 16*half+16; l++ {
						v := int32((q[l] >> shift) & 3)
						if hm[l]&m == 0 {
							v -= 4
						}
						y[o] = dl * float32(v)
						o++
					}
				}
				m <<= 1
			}
		}
	}
}

// --- Q4_K and Q5_K ---

// packScaleMinK4 stores sub-block j's 6-bit scale ls and min lm into the
// 12 scale bytes of a Q4_K/Q5_K block (the inverse of getScaleMinK4).
func packScaleMinK4(sc []byte, j int, ls, lm uint8) {
	if j < 4 {
		sc[j] = ls
		sc[j+4] = lm
	} else {
		sc[j+4] = ls&0xF | (lm&0xF)<<4
		sc[j-4] |= (ls >> 4) << 6
		sc[j] |= (lm >> 4) << 6
	}
}

// requantizeK4 rounds x to [0, nmax] against a Q4_K/Q5_K block's stored
// scales and mins (d and dmin at offsets 0 and 2, scales at 4).
func requantizeK4(x []float32, y []byte, L []uint8, nmax int32) {
	sc := y[q4KScales : q4KScales+12]
	dAll, mAll := getFP16(y[q4KD:]), getFP16(y[q4KDmin:])
	for j := 0; j < qkK/32; j++ {
		s, m := getScaleMinK4(j, sc)
		d := dAll * float32(s)
		if d == 0 {
			continue
		}
		dm := float32(mAll * float32(m)) // no FMA into x + dm
		for ii := 0; ii < 32; ii++ {
			l := nearestInt(float32((x[32*j+ii] + dm) / d))
			L[32*j+ii] = uint8(clampInt32(l, 0, nmax))
		}
	}
}

// refScalesK4 is the common first half of quantize_row_q4_K_ref and
// quantize_row_q5_K_ref: per-sub-block make_qkx2_quants with
// av_x + |x| weights, then 6-bit scales and mins relative to their maxima.
func refScalesK4(x []float32, y []byte, s *kScratch, nmax int, rmin, rdelta float32, nstep int) {
	L := s.L[:]
	var maxScale, maxMin float32
	for j := 0; j < qkK/32; j++ {
		xs := x[32*j : 32*j+32]
		var sumx2 float32
		for _, v := range xs {
			sumx2 += float32(v * v)
		}
		avX := sqrt32(sumx2 / 32)
		for l, v := range xs {
			s.weights[l] = avX + absf(v)
		}
		s.scales[j], s.mins[j] = makeQKX2Quants(32, nmax, xs, s.weights[:32], L[32*j:32*j+32], s.Laux[:32], rmin, rdelta, nstep, false)
		if s.scales[j] > maxScale {
			maxScale = s.scales[j]
		}
		if s.mins[j] > maxMin {
			maxMin = s.mins[j]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := y[q4KScales : q4KScales+12]
	for j := 0; j < qkK/32; j++ {
		ls := min(63, uint8(nearestInt(float32(invScale*s.scales[j]))))
		lm := min(63, uint8(nearestInt(float32(invMin*s.mins[j]))))
		packScaleMinK4(sc, j, ls, lm)
	}
	putFP16(y[q4KD:], maxScale/63)
	putFP16(y[q4KDmin:], maxMin/63)
}

// implScalesK4 is the common first half of quantize_row_q4_K_impl and
// quantize_row_q5_K_impl: make_qkx3_quants with importance weights, then
// make_qp_quants for the sub-block scales and mins. clampLs applies the
// MIN(63, ...) that only the Q5_K version has.
func implScalesK4(x []float32, y []byte, qw []float32, s *kScratch, nmax int, clampLs bool) {
	L := s.L[:]
	var sumx2 float32
	for _, v := range x[:qkK] {
		sumx2 += float32(v * v)
	}
	sigma2 := float32(2 * sumx2 / qkK) // no FMA with the x*x added to it
	for j := 0; j < qkK/32; j++ {
		xs := x[32*j : 32*j+32]
		w := s.weights[:32]
		for l, v := range xs {
			w[l] = qw[32*j+l] * sqrt32(sigma2+float32(v*v))
		}
		var sumw float32
		for _, v := range w {
			sumw += v
		}
		s.sw[j] = sumw
		s.scales[j], s.mins[j] = makeQKX3Quants(32, nmax, xs, w, L[32*j:32*j+32], s.Laux[:32], -0.9, 0.05, 36, false)
	}
	dBlock := makeQPQuants(qkK/32, 63, s.scales[:], s.Ls[:], s.sw[:])
	mBlock := makeQPQuants(qkK/32, 63, s.mins[:], s.Lm[:], s.sw[:])
	sc := y[q4KScales : q4KScales+12]
	for j := 0; j < qkK/32; j++ {
		ls, lm := s.Ls[j], s.Lm[j]
		if clampLs {
			ls, lm = min(63, ls), min(63, lm)
		}
		packScaleMinK4(sc, j, ls, lm)
	}
	putFP16(y[q4KD:], dBlock)
	putFP16(y[q4KDmin:], mBlock)
}

// packQ4K stores 4-bit L: byte l of each 32-byte group holds elements l
// (low nibble) and l+32 (high nibble) of its 64.
func packQ4K(L []uint8, qs []byte) {
	for j := 0; j < qkK; j += 64 {
		q := qs[j/2 : j/2+32]
		for l := range q {
			q[l] = L[j+l] | L[j+l+32]<<4
		}
	}
}

// packQ5K stores 5-bit L as Q4_K's nibbles plus one high bit per element
// in qh: bits 2k and 2k+1 of qh[l] for elements 64k+l and 64k+l+32.
func packQ5K(L []uint8, qh, qs []byte) {
	clear(qh[:32])
	m1, m2 := uint8(1), uint8(2)
	for n := 0; n < qkK; n += 64 {
		ql := qs[n/2 : n/2+32]
		for j := 0; j < 32; j++ {
			l1, l2 := L[n+j], L[n+j+32]
			if l1 > 15 {
				l1 -= 16
				qh[j] |= m1
			}
			if l2 > 15 {
				l2 -= 16
				qh[j] |= m2
			}
			ql[j] = l1 | l2<<4
		}
		m1 <<= 2
		m2 <<= 2
	}
}

// quantizeBlockQ4K is quantize_row_q4_K_ref for one block.
func quantizeBlockQ4K(x []float32, y []byte, _ []float32, s *kScratch) {
	refScalesK4(x, y, s, 15, -1, 0.1, 20)
	requantizeK4(x, y, s.L[:], 15)
	packQ4K(s.L[:], y[q4KQs:q4KQs+128])
}

// quantizeBlockQ4KImpl is quantize_row_q4_K_impl for one block.
func quantizeBlockQ4KImpl(x []float32, y []byte, qw []float32, s *kScratch) {
	implScalesK4(x, y, qw, s, 15, false)
	requantizeK4(x, y, s.L[:], 15)
	packQ4K(s.L[:], y[q4KQs:q4KQs+128])
}

// quantizeBlockQ5K is quantize_row_q5_K_ref for one block.
func quantizeBlockQ5K(x []float32, y []byte, _ []float32, s *kScratch) {
	refScalesK4(x, y, s, 31, -0.5, 0.1, 15)
	requantizeK4(x, y, s.L[:], 31)
	packQ5K(s.L[:], y[q5KQh:q5KQh+32], y[q5KQs:q5KQs+128])
}

// quantizeBlockQ5KImpl is quantize_row_q5_K_impl for one block.
func quantizeBlockQ5KImpl(x []float32, y []byte, qw []float32, s *kScratch) {
	implScalesK4(x, y, qw, s, 31, true)
	requantizeK4(x, y, s.L[:], 31)
	packQ5K(s.L[:], y[q5KQh:q5KQh+32], y[q5KQs:q5KQs+128])
}

// dequantizeQ4K is dequantize_row_q4_K.
func dequantizeQ4K(src []byte, dst []float32) {
	for b := 0; b < len(src)/q4KSize; b++ {
		blk := src[b*q4KSize : (b+1)*q4KSize]
		y := dst[b*qkK : (b+1)*qkK]
		d, mn := getFP16(blk[q4KD:]), getFP16(blk[q4KDmin:])
		sc := blk[q4KScales : q4KScales+12]
		for j, is := 0, 0; j < qkK; j, is = j+64, is+2 {
			q := blk[q4KQs+j/2 : q4KQs+j/2+32]
			s1, m1 := getScaleMinK4(is, sc)
			s2, m2 := getScaleMinK4(is+1, sc)
			d1, mm1 := d*float32(s1), float32(mn*float32(m1)) // mm1, mm2: no FMA
			d2, mm2 := d*float32(s2), float32(mn*float32(m2))
			for l := 0; l < 32; l++ {
				y[j+l] = float32(d1*float32(q[l]&0xF)) - mm1
				y[j+32+l] = float32(d2*float32(q[l]>>4)) - mm2
			}
		}
	}
}

// dequantizeQ5K is dequantize_row_q5_K.
func dequantizeQ5K(src []byte, dst []float32) {
	for b := 0; b < len(src)/q5KSize; b++ {
		blk := src[b*q5KSize : (b+1)*q5KSize]
		y := dst[b*qkK : (b+1)*qkK]
		d, mn := getFP16(blk[q5KD:]), getFP16(blk[q5KDmin:])
		sc := blk[q5KScales : q5KScales+12]
		qh := blk[q5KQh : q5KQh+32]
		u1, u2 := uint8(1), uint8(2)
		for j, is := 0, 0; j < qkK; j, is = j+64, is+2 {
			ql := blk[q5KQs+j/2 : q5KQs+j/2+32]
			s1, m1 := getScaleMinK4(is, sc)
			s2, m2 := getScaleMinK4(is+1, sc)
			d1, mm1 := d*float32(s1), float32(mn*float32(m1)) // mm1, mm2: no FMA
			d2, mm2 := d*float32(s2), float32(mn*float32(m2))
			for l := 0; l < 32; l++ {
				v1, v2 := int32(ql[l]&0xF), int32(ql[l]>>4)
				if qh[l]&u1 != 0 {
					v1 += 16
				}
				if qh[l]&u2 != 0 {
					v2 += 16
				}
				y[j+l] = float32(d1*float32(v1)) - mm1
				y[j+32+l] = float32(d2*float32(v2)) - mm2
			}
			u1 <<= 2
			u2 <<= 2
		}
	}
}

// --- Q6_K ---

// quantizeBlockQ6K is quantize_row_q6_K_ref for one block.
func quantizeBlockQ6K(x []float32, y []byte, _ []float32, s *kScratch) {
	quantizeBlockQ6KWith(x, y, nil, s)
}

// quantizeBlockQ6KImpl is quantize_row_q6_K_impl for one block; it differs
// from the ref only in passing the raw importance weights to make_qx_quants.
func quantizeBlockQ6KImpl(x []float32, y []byte, qw []float32, s *kScratch) {
	quantizeBlockQ6KWith(x, y, qw, s)
}

func quantizeBlockQ6KWith(x []float32, y []byte, qw []float32, s *kScratch) {
	L := s.Li[:]
	var maxScale, maxAbsScale float32
	for ib := 0; ib < qkK/16; ib++ {
		var w []float32
		if qw != nil {
			w = qw[16*ib : 16*ib+16]
		}
		scale := makeQXQuants(16, 32, x[16*ib:16*ib+16], L[16*ib:16*ib+16], 1, w)
		s.scales[ib] = scale
		if a := absf(scale); a > maxAbsScale {
			maxAbsScale, maxScale = a, scale
		}
	}
	if maxAbsScale < groupMaxEps {
		clear(y[:q6KSize])
		putFP16(y[q6KD:], 0)
		return
	}
	iscale := -128 / maxScale
	putFP16(y[q6KD:], 1/iscale)
	sc := y[q6KScales : q6KScales+16]
	for ib := range sc {
		sc[ib] = uint8(int8(min(127, nearestInt(float32(iscale*s.scales[ib])))))
	}
	dAll := getFP16(y[q6KD:])
	for j := 0; j < qkK/16; j++ {
		d := dAll * float32(int8(sc[j]))
		if d == 0 {
			continue
		}
		for ii := 0; ii < 16; ii++ {
			l := nearestInt(float32(x[16*j+ii] / d))
			L[16*j+ii] = int8(clampInt32(l, -32, 31) + 32)
		}
	}
	for j := 0; j < qkK; j += 128 {
		ql := y[q6KQl+j/2 : q6KQl+j/2+64]
		qh := y[q6KQh+j/4 : q6KQh+j/4+32]
		for l := 0; l < 32; l++ {
			q1, q2 := uint8(L[j+l])&0xF, uint8(L[j+l+32])&0xF
			q3, q4 := uint8(L[j+l+64])&0xF, uint8(L[j+l+96])&0xF
			ql[l] = q1 | q3<<4
			ql[l+32] = q2 | q4<<4
			qh[l] = uint8(L[j+l]>>4) | uint8(L[j+l+32]>>4)<<2 | uint8(L[j+l+64]>>4)<<4 | uint8(L[j+l+96]>>4)<<6
		}
	}
}

// dequantizeQ6K is dequantize_row_q6_K.
func dequantizeQ6K(src []byte, dst []float32) {
	for b := 0; b < len(src)/q6KSize; b++ {
		blk := src[b*q6KSize : (b+1)*q6KSize]
		y := dst[b*qkK : (b+1)*qkK]
		d := getFP16(blk[q6KD:])
		for n := 0; n < qkK; n += 128 {
			ql := blk[q6KQl+n/2 : q6KQl+n/2+64]
			qh := blk[q6KQh+n/4 : q6KQh+n/4+32]
			sc := blk[q6KScales+n/16 : q6KScales+n/16+8]
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int32(ql[l]&0xF|(qh[l]>>0&3)<<4) - 32
				q2 := int32(ql[l+32]&0xF|(qh[l]>>2&3)<<4) - 32
				q3 := int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				y[n+l] = d * float32(int8(sc[is])) * float32(q1)
				y[n+l+32] = d * float32(int8(sc[is+2])) * float32(q2)
				y[n+l+64] = d * float32(int8(sc[is+4])) * float32(q3)
				y[n+l+96] = d * float32(int8(sc[is+6])) * float32(q4)
			}
		}
	}
}

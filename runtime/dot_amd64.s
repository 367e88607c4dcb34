#include "textflag.h"

// Float64 dot products of float32 weight rows with float64 activations,
// four lanes per accumulator (lane k sums the columns i ≡ k mod 4 in
// increasing order), reduced as (lane0+lane2)+(lane1+lane3). dotLanes in
// dot.go computes exactly the same values: every product of a float32
// weight and a float32-valued activation is exact in float64, so the fused
// multiply-add rounds exactly as a separate multiply and add would.
// n is a positive multiple of 4.

// REDUCE folds the four lanes of accumulator Yk into one float64 at off(R9).
#define REDUCE(Yk, Xk, off) \
	VEXTRACTF128 $1, Yk, X14 \
	VADDPD Xk, X14, X14 \
	VUNPCKHPD X14, X14, X15 \
	VADDSD X15, X14, X14 \
	VMOVSD X14, off(R9)

// func dot2x4AVX2(w0, w1 *float32, x0, x1, x2, x3 *float64, n int, out *[8]float64)
TEXT ·dot2x4AVX2(SB), NOSPLIT, $0-64
	MOVQ w0+0(FP), AX
	MOVQ w1+8(FP), BX
	MOVQ x0+16(FP), CX
	MOVQ x1+24(FP), DX
	MOVQ x2+32(FP), SI
	MOVQ x3+40(FP), DI
	MOVQ n+48(FP), R8
	MOVQ out+56(FP), R9
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7
	XORQ R10, R10

loop24:
	VCVTPS2PD (AX)(R10*4), Y8
	VCVTPS2PD (BX)(R10*4), Y9
	VMOVUPD (CX)(R10*8), Y10
	VMOVUPD (DX)(R10*8), Y11
	VMOVUPD (SI)(R10*8), Y12
	VMOVUPD (DI)(R10*8), Y13
	VFMADD231PD Y8, Y10, Y0
	VFMADD231PD Y9, Y10, Y1
	VFMADD231PD Y8, Y11, Y2
	VFMADD231PD Y9, Y11, Y3
	VFMADD231PD Y8, Y12, Y4
	VFMADD231PD Y9, Y12, Y5
	VFMADD231PD Y8, Y13, Y6
	VFMADD231PD Y9, Y13, Y7
	ADDQ $4, R10
	CMPQ R10, R8
	JLT loop24

	REDUCE(Y0, X0, 0)
	REDUCE(Y1, X1, 8)
	REDUCE(Y2, X2, 16)
	REDUCE(Y3, X3, 24)
	REDUCE(Y4, X4, 32)
	REDUCE(Y5, X5, 40)
	REDUCE(Y6, X6, 48)
	REDUCE(Y7, X7, 56)
	VZEROUPPER
	RET

// func dot4x1AVX2(w0, w1, w2, w3 *float32, x *float64, n int, out *[4]float64)
TEXT ·dot4x1AVX2(SB), NOSPLIT, $0-56
	MOVQ w0+0(FP), AX
	MOVQ w1+8(FP), BX
	MOVQ w2+16(FP), CX
	MOVQ w3+24(FP), DX
	MOVQ x+32(FP), SI
	MOVQ n+40(FP), R8
	MOVQ out+48(FP), R9
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	XORQ R10, R10

loop41:
	VMOVUPD (SI)(R10*8), Y8
	VCVTPS2PD (AX)(R10*4), Y9
	VCVTPS2PD (BX)(R10*4), Y10
	VCVTPS2PD (CX)(R10*4), Y11
	VCVTPS2PD (DX)(R10*4), Y12
	VFMADD231PD Y9, Y8, Y0
	VFMADD231PD Y10, Y8, Y1
	VFMADD231PD Y11, Y8, Y2
	VFMADD231PD Y12, Y8, Y3
	ADDQ $4, R10
	CMPQ R10, R8
	JLT loop41

	REDUCE(Y0, X0, 0)
	REDUCE(Y1, X1, 8)
	REDUCE(Y2, X2, 16)
	REDUCE(Y3, X3, 24)
	VZEROUPPER
	RET

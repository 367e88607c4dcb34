package runtime

import "golang.org/x/sys/cpu"

// hasAVX2 selects the assembly kernels; they give the same bits as the Go
// ones (see dot_amd64.s), only faster.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dot2x4AVX2(w0, w1 *float32, x0, x1, x2, x3 *float64, n int, out *[8]float64)

//go:noescape
func dot4x1AVX2(w0, w1, w2, w3 *float32, x *float64, n int, out *[4]float64)

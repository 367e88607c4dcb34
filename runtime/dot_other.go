//go:build !amd64

package runtime

// hasAVX2 is false off amd64: the Go kernels run.
var hasAVX2 = false

func dot2x4AVX2(w0, w1 *float32, x0, x1, x2, x3 *float64, n int, out *[8]float64) {
	panic("unreachable")
}

func dot4x1AVX2(w0, w1, w2, w3 *float32, x *float64, n int, out *[4]float64) {
	panic("unreachable")
}

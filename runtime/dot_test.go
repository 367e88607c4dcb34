package runtime

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDotKernelsAgree checks that the assembly kernels and the Go kernels
// give identical bits, and that the canonical order is close to the exact
// sum.
func TestDotKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 3, 4, 5, 8, 63, 64, 257, 1024} {
		w := make([][]float32, 4)
		x := make([][]float64, 4)
		for j := range w {
			w[j] = make([]float32, n)
			x[j] = make([]float64, n)
			for i := range w[j] {
				w[j][i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()))
				x[j][i] = float64(float32(rng.NormFloat64() * 10))
			}
		}
		run := func() ([8]float64, [4]float64) {
			return dot2x4(w[0], w[1], x[0], x[1], x[2], x[3]), dot4x1(w[0], w[1], w[2], w[3], x[0])
		}
		a8, a4 := run()
		saved := hasAVX2
		hasAVX2 = false
		g8, g4 := run()
		hasAVX2 = saved
		for k := range a8 {
			if math.Float64bits(a8[k]) != math.Float64bits(g8[k]) {
				t.Errorf("n=%d dot2x4[%d]: kernel %v, Go %v", n, k, a8[k], g8[k])
			}
		}
		for k := range a4 {
			if math.Float64bits(a4[k]) != math.Float64bits(g4[k]) {
				t.Errorf("n=%d dot4x1[%d]: kernel %v, Go %v", n, k, a4[k], g4[k])
			}
			want := dotLanes(w[k], x[0])
			if a4[k] != want {
				t.Errorf("n=%d dot4x1[%d] = %v, dotLanes %v", n, k, a4[k], want)
			}
		}
	}
	t.Logf("assembly kernels in use: %v", hasAVX2)
}

package quantize

import (
	"math"
	"testing"
)

// bestIndexIQ4Bisect is ggml's best_index_int8 as written: bisection,
// then the float32 comparison of the distances to the two neighbours.
func bestIndexIQ4Bisect(x float32) uint8 {
	v := &kvaluesIQ4NL
	if x <= float32(v[0]) {
		return 0
	}
	if x >= float32(v[15]) {
		return 15
	}
	ml, mu := 0, 15
	for mu-ml > 1 {
		mav := (ml + mu) / 2
		if x < float32(v[mav]) {
			mu = mav
		} else {
			ml = mav
		}
	}
	if x-float32(v[mu-1]) < float32(v[mu])-x {
		return uint8(mu - 1)
	}
	return uint8(mu)
}

// TestBestIndexIQ4 checks the table lookup against ggml's bisection for
// every float32 within 2^16 floats of each grid value and each midpoint
// between neighbours (where rounding could matter), a strided sweep of all
// other magnitudes up to 256, and the special values.
func TestBestIndexIQ4(t *testing.T) {
	check := func(x float32) {
		if got, want := bestIndexIQ4(x), bestIndexIQ4Bisect(x); got != want {
			t.Fatalf("bestIndexIQ4(%g [%08x]) = %d, ggml gives %d", x, math.Float32bits(x), got, want)
		}
	}
	v := &kvaluesIQ4NL
	var points []float32
	for k := range v {
		points = append(points, float32(v[k]))
		if k+1 < len(v) {
			points = append(points, float32(int(v[k])+int(v[k+1]))/2)
		}
	}
	for _, p := range points {
		c := math.Float32bits(p)
		for d := uint32(0); d <= 1<<16; d++ {
			check(math.Float32frombits(c + d))
			check(math.Float32frombits(c - d))
		}
	}
	for b := uint32(0); b < math.Float32bits(256); b += 1021 {
		check(math.Float32frombits(b))
		check(math.Float32frombits(b | 0x80000000))
	}
	for _, x := range []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), 1e30, -1e30, math.MaxFloat32, -128, 128, -127, 113} {
		check(float32(x))
	}
}

package quantize

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bestIndexMXFP4All is ggml's best_index_mxfp4 as written: all 16 codes.
func bestIndexMXFP4All(x, d float32) uint8 {
	best := 0
	bestErr := absf(float32(float32(kvaluesMXFP4[0])*d) - x)
	for i := 1; i < 16; i++ {
		if err := absf(float32(float32(kvaluesMXFP4[i])*d) - x); err < bestErr {
			best, bestErr = i, err
		}
	}
	return uint8(best)
}

// TestBestIndexMXFP4 checks the one-sided search against ggml's full one
// for every exponent, on exact grid points, midpoints and their float
// neighbours, random values, and special values.
func TestBestIndexMXFP4(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for e := 0; e < 256; e++ {
		d := e8m0Half(uint8(e))
		var xs []float32
		for _, k := range kvaluesMXFP4 {
			for _, h := range []float32{0, 0.5, 1} {
				c := (float32(k) + h) * d
				xs = append(xs, c, -c, math.Nextafter32(c, 0), math.Nextafter32(c, float32(math.Inf(1))),
					math.Nextafter32(-c, 0), math.Nextafter32(-c, float32(math.Inf(-1))))
			}
		}
		for range 64 {
			xs = append(xs, float32(r.NormFloat64()*8)*d)
		}
		xs = append(xs, 0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()))
		for _, x := range xs {
			if got, want := bestIndexMXFP4(x, d), bestIndexMXFP4All(x, d); got != want {
				t.Fatalf("e=%d x=%g: got code %d, ggml %d", e, x, got, want)
			}
		}
	}
}

// TestMXFP4Exponent checks the shared exponent at powers of two and just
// below them, where log2f may round up to the power's exponent. roundUp
// counts, for a few binades, how many of the largest floats below 2^k have
// floorf(log2f(x)) == k with glibc 2.36's log2f (measured with a C program
// over the top 2^14 floats below every power of two, which agreed with
// mxfp4Exponent everywhere).
func TestMXFP4Exponent(t *testing.T) {
	exp := func(log2 int) uint8 { return uint8(int32(log2 - 2 + 127)) } // (uint8_t) keeps the low byte
	for k := -149; k <= 127; k++ {
		p := float32(math.Ldexp(1, k))
		if got := mxfp4Exponent(p); got != exp(k) {
			t.Errorf("mxfp4Exponent(2^%d) = %d, want %d", k, got, exp(k))
		}
	}
	roundUp := map[int]int{-148: 0, -140: 0, -131: 1, -127: 11, -126: 22, -1: 0, 0: 0, 1: 0, 2: 0, 3: 1, 10: 5, 100: 44, 127: 44, 128: 44}
	for k, n := range roundUp {
		top := uint32(0x7f800000) // 2^128
		if k < 128 {
			top = math.Float32bits(float32(math.Ldexp(1, k)))
		}
		for i := uint32(1); i <= uint32(n)+1; i++ {
			x := math.Float32frombits(top - i)
			want := exp(k)
			if i == uint32(n)+1 {
				want = exp(k - 1)
			}
			if got := mxfp4Exponent(x); got != want {
				t.Errorf("mxfp4Exponent(%g, %d below 2^%d) = %d, want %d", x, i, k, got, want)
			}
		}
	}
	if got := mxfp4Exponent(0); got != 0 {
		t.Errorf("mxfp4Exponent(0) = %d, want 0", got)
	}
}

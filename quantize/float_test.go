package quantize

import (
	"math"
	"testing"
)

// TestGGMLFP16MatchesRoundToNearestEven checks ggmlFP16 (ggml's bit
// trick) against x448/float16's round-to-nearest-even on a sweep of
// float32 bit patterns: every pattern whose low 12 bits are in a small
// set around the half-precision rounding points, across all exponents and
// both signs. NaNs must become ggml's canonical quiet NaN.
func TestGGMLFP16MatchesRoundToNearestEven(t *testing.T) {
	lows := []uint32{0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x0800, 0x07ff, 0x0801, 0x17ff, 0x1800, 0x1801}
	n := 0
	for hi := uint32(0); hi < 1<<19; hi++ {
		for _, lo := range lows {
			bits := hi<<13 | lo&0x1fff
			f := math.Float32frombits(bits)
			got := ggmlFP16(f)
			if f != f {
				if want := uint16(bits>>16)&0x8000 | 0x7E00; got != want {
					t.Fatalf("NaN %08x: got %04x want %04x", bits, got, want)
				}
				continue
			}
			if want := fp32ToFP16(f); got != want {
				t.Fatalf("%g (%08x): ggml trick gives %04x, round-to-nearest-even %04x", f, bits, got, want)
			}
			n++
		}
	}
	t.Logf("%d values checked", n)
}

func TestGGMLBF16(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above the tie
		{0x7f7fffff, 0x7f80}, // largest finite rounds to infinity
		{0xff800000, 0xff80}, // -inf
		{0x7f800001, 0x7fc0}, // signalling NaN is made quiet
		{0xffc00000, 0xffc0}, // quiet NaN keeps its sign
		{0x00000001, 0x0000}, // smallest subnormal rounds to zero
		{0x80000000, 0x8000}, // -0
	} {
		if got := ggmlBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("bf16(%08x) = %04x, want %04x", c.in, got, c.want)
		}
	}
}

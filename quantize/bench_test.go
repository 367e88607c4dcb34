package quantize

import (
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Benchmarks quantize and dequantize 256 rows of 4096 values: large enough
// to time the hot loops, small enough for a shared CI machine.

const benchRows, benchCols = 256, 4096

func benchQuantize(b *testing.B, typ ir.DType, withImatrix bool) {
	x, imatrix := qvRowsData(1, benchRows, benchCols)
	if !withImatrix {
		imatrix = nil
	}
	rb, err := ir.RowBytes(typ, benchCols)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, int(rb)*benchRows)
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		if _, err := QuantizeRows(typ, x, benchCols, imatrix, dst); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDequantize(b *testing.B, types ...ir.DType) {
	x, _ := qvRowsData(1, benchRows, benchCols)
	y := make([]float32, len(x))
	for _, typ := range types {
		b.Run(typ.String(), func(b *testing.B) {
			rb, _ := ir.RowBytes(typ, benchCols)
			q := make([]byte, int(rb)*benchRows)
			if _, err := QuantizeRows(typ, x, benchCols, nil, q); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(4 * len(y)))
			for b.Loop() {
				if _, err := DequantizeRows(typ, q, y); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQuantizeF16(b *testing.B)  { benchQuantize(b, ir.F16, false) }
func BenchmarkQuantizeBF16(b *testing.B) { benchQuantize(b, ir.BF16, false) }

func BenchmarkQuantizeQ4_0(b *testing.B)        { benchQuantize(b, ir.Q4_0, false) }
func BenchmarkQuantizeQ4_0Imatrix(b *testing.B) { benchQuantize(b, ir.Q4_0, true) }
func BenchmarkQuantizeQ4_1(b *testing.B)        { benchQuantize(b, ir.Q4_1, false) }
func BenchmarkQuantizeQ4_1Imatrix(b *testing.B) { benchQuantize(b, ir.Q4_1, true) }
func BenchmarkQuantizeQ5_0(b *testing.B)        { benchQuantize(b, ir.Q5_0, false) }
func BenchmarkQuantizeQ5_0Imatrix(b *testing.B) { benchQuantize(b, ir.Q5_0, true) }
func BenchmarkQuantizeQ5_1(b *testing.B)        { benchQuantize(b, ir.Q5_1, false) }
func BenchmarkQuantizeQ5_1Imatrix(b *testing.B) { benchQuantize(b, ir.Q5_1, true) }
func BenchmarkQuantizeQ8_0(b *testing.B)        { benchQuantize(b, ir.Q8_0, false) }

func BenchmarkQuantizeIQ4_NL(b *testing.B)        { benchQuantize(b, ir.IQ4_NL, false) }
func BenchmarkQuantizeIQ4_NLImatrix(b *testing.B) { benchQuantize(b, ir.IQ4_NL, true) }
func BenchmarkQuantizeIQ4_XS(b *testing.B)        { benchQuantize(b, ir.IQ4_XS, false) }
func BenchmarkQuantizeIQ4_XSImatrix(b *testing.B) { benchQuantize(b, ir.IQ4_XS, true) }

func BenchmarkQuantizeTQ1_0(b *testing.B) { benchQuantize(b, ir.TQ1_0, false) }
func BenchmarkQuantizeTQ2_0(b *testing.B) { benchQuantize(b, ir.TQ2_0, false) }

func BenchmarkQuantizeMXFP4(b *testing.B) { benchQuantize(b, ir.MXFP4, false) }

func BenchmarkDequantizeFloat(b *testing.B) { benchDequantize(b, ir.F16, ir.BF16) }
func BenchmarkDequantizeLegacy(b *testing.B) {
	benchDequantize(b, ir.Q4_0, ir.Q4_1, ir.Q5_0, ir.Q5_1, ir.Q8_0)
}
func BenchmarkDequantizeIQ4(b *testing.B)     { benchDequantize(b, ir.IQ4_NL, ir.IQ4_XS) }
func BenchmarkDequantizeTernary(b *testing.B) { benchDequantize(b, ir.TQ1_0, ir.TQ2_0) }
func BenchmarkDequantizeMXFP4(b *testing.B)   { benchDequantize(b, ir.MXFP4) }

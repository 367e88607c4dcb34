package quantize

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// kqTypes are the k-quant types this file checks.
var kqTypes = []ir.DType{ir.Q2_K, ir.Q3_K, ir.Q4_K, ir.Q5_K, ir.Q6_K}

// kqReadF32 reads a little-endian float32 file.
func kqReadF32(t testing.TB, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%4 != 0 {
		t.Fatalf("%s: %d bytes is not whole float32s", path, len(b))
	}
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

// kqCheckDir checks every k-quant type, with and without the importance
// matrix, against ggml's outputs in dir, whose rows are ncols long.
func kqCheckDir(t *testing.T, dir string, ncols int) {
	inputs := kqReadF32(t, filepath.Join(dir, "inputs.f32"))
	imatrix := kqReadF32(t, filepath.Join(dir, "imatrix.f32"))
	if len(inputs)%ncols != 0 || len(imatrix) != ncols {
		t.Fatalf("%s: %d inputs and %d importance weights for rows of %d", dir, len(inputs), len(imatrix), ncols)
	}
	for _, typ := range kqTypes {
		for _, imat := range []bool{false, true} {
			name, qw := typ.String(), []float32(nil)
			if imat {
				name, qw = name+".imatrix", imatrix
			}
			t.Run(name, func(t *testing.T) {
				want, err := os.ReadFile(filepath.Join(dir, name+".bin"))
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want))
				n, err := QuantizeRows(typ, inputs, ncols, qw, got)
				if err != nil {
					t.Fatal(err)
				}
				if n != len(want) {
					t.Fatalf("wrote %d bytes, ggml wrote %d", n, len(want))
				}
				kqCompareBlocks(t, typ, ncols, got, want)

				wantDQ := kqReadF32(t, filepath.Join(dir, name+".dequant.f32"))
				gotDQ := make([]float32, len(wantDQ))
				if _, err := DequantizeRows(typ, want, gotDQ); err != nil {
					t.Fatal(err)
				}
				for i := range wantDQ {
					if math.Float32bits(gotDQ[i]) != math.Float32bits(wantDQ[i]) {
						t.Fatalf("dequant row %d col %d: got %g (%#08x), ggml %g (%#08x)", i/ncols, i%ncols,
							gotDQ[i], math.Float32bits(gotDQ[i]), wantDQ[i], math.Float32bits(wantDQ[i]))
					}
				}
			})
		}
	}
}

// kqCompareBlocks fails at the first block that differs, naming its row
// and byte offset, so a mismatch points at the part of the layout at fault.
func kqCompareBlocks(t *testing.T, typ ir.DType, ncols int, got, want []byte) {
	t.Helper()
	ts := typ.TypeSize()
	perRow := ncols / typ.BlockSize()
	bad := 0
	for b := 0; b*ts < len(want); b++ {
		g, w := got[b*ts:(b+1)*ts], want[b*ts:(b+1)*ts]
		for i := range w {
			if g[i] != w[i] {
				if bad < 4 {
					t.Errorf("row %d block %d byte %d: got %#02x, ggml %#02x\n got  %x\n want %x",
						b/perRow, b%perRow, i, g[i], w[i], g, w)
				}
				bad++
				break
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d blocks differ", bad, len(want)/ts)
	}
}

// TestKQuantsFixtures compares against the full reference vectors (rows of
// 256, 512 and 1024) from the shared fixtures directory.
func TestKQuantsFixtures(t *testing.T) {
	root := os.Getenv("GEMMACONV_FIXTURES")
	if root == "" {
		t.Skip("GEMMACONV_FIXTURES is not set; the committed n256 goldens are checked by TestKQuantsGoldens")
	}
	for _, set := range []struct {
		dir   string
		ncols int
	}{{"n256", 256}, {"n512", 512}, {"n1024", 1024}} {
		t.Run(set.dir, func(t *testing.T) {
			kqCheckDir(t, filepath.Join(root, "quant-vectors", set.dir), set.ncols)
		})
	}
}

// TestKQuantsGoldens compares against the committed copy of the n256
// reference vectors, so the check runs without the fixtures directory.
func TestKQuantsGoldens(t *testing.T) {
	kqCheckDir(t, filepath.Join("..", "goldens", "quant-vectors", "n256"), 256)
}

// kqRandomRows makes nrows x ncols values of mixed scale, including
// all-zero and single-outlier sub-blocks, which exercise the degenerate
// branches of the searches.
func kqRandomRows(nrows, ncols int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, nrows*ncols)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 0.02)
	}
	for i := 0; i < len(x); i += 512 {
		clear(x[i : i+32])
		x[i+40] = 3
	}
	return x
}

// TestKQuantsRowsAtOnce checks that one call over many rows equals one call
// per row: the importance weights must restart at every row, and the
// unweighted path must not carry state from block to block.
func TestKQuantsRowsAtOnce(t *testing.T) {
	const nrows, ncols = 8, 768
	x := kqRandomRows(nrows, ncols, 7)
	r := rand.New(rand.NewPCG(3, 4))
	imatrix := make([]float32, ncols)
	for i := range imatrix {
		imatrix[i] = float32(r.ExpFloat64())
	}
	for _, typ := range kqTypes {
		for _, qw := range [][]float32{nil, imatrix} {
			rb, _ := ir.RowBytes(typ, ncols)
			all := make([]byte, nrows*int(rb))
			if _, err := QuantizeRows(typ, x, ncols, qw, all); err != nil {
				t.Fatal(err)
			}
			one := make([]byte, rb)
			for row := 0; row < nrows; row++ {
				if _, err := QuantizeRows(typ, x[row*ncols:(row+1)*ncols], ncols, qw, one); err != nil {
					t.Fatal(err)
				}
				if string(one) != string(all[row*int(rb):(row+1)*int(rb)]) {
					t.Errorf("%s (imatrix %v): row %d differs when quantized alone", typ, qw != nil, row)
				}
			}
			// The output must also decode to values close to the input.
			dq := make([]float32, len(x))
			if _, err := DequantizeRows(typ, all, dq); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if d := math.Abs(float64(dq[i] - x[i])); d > 0.5 || math.IsNaN(float64(dq[i])) {
					t.Fatalf("%s: value %d decodes to %g from %g", typ, i, dq[i], x[i])
				}
			}
		}
	}
}

func kqBenchmark(b *testing.B, typ ir.DType, withImatrix bool) {
	const nrows, ncols = 256, 4096
	x := kqRandomRows(nrows, ncols, 1)
	var qw []float32
	if withImatrix {
		qw = make([]float32, ncols)
		for i := range qw {
			qw[i] = 1 + float32(i%7)
		}
	}
	rb, _ := ir.RowBytes(typ, ncols)
	dst := make([]byte, nrows*int(rb))
	b.SetBytes(int64(4 * len(x)))
	b.ResetTimer()
	for range b.N {
		if _, err := QuantizeRows(typ, x, ncols, qw, dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQuantizeQ2_K(b *testing.B) { kqBenchmark(b, ir.Q2_K, false) }
func BenchmarkQuantizeQ3_K(b *testing.B) { kqBenchmark(b, ir.Q3_K, false) }
func BenchmarkQuantizeQ4_K(b *testing.B) { kqBenchmark(b, ir.Q4_K, false) }
func BenchmarkQuantizeQ5_K(b *testing.B) { kqBenchmark(b, ir.Q5_K, false) }
func BenchmarkQuantizeQ6_K(b *testing.B) { kqBenchmark(b, ir.Q6_K, false) }

func BenchmarkQuantizeQ2_KImatrix(b *testing.B) { kqBenchmark(b, ir.Q2_K, true) }
func BenchmarkQuantizeQ3_KImatrix(b *testing.B) { kqBenchmark(b, ir.Q3_K, true) }
func BenchmarkQuantizeQ4_KImatrix(b *testing.B) { kqBenchmark(b, ir.Q4_K, true) }
func BenchmarkQuantizeQ5_KImatrix(b *testing.B) { kqBenchmark(b, ir.Q5_K, true) }
func BenchmarkQuantizeQ6_KImatrix(b *testing.B) { kqBenchmark(b, ir.Q6_K, true) }

// BenchmarkDequantizeKQuants decodes 256 rows of 4096 for each type.
func BenchmarkDequantizeKQuants(b *testing.B) {
	const nrows, ncols = 256, 4096
	x := kqRandomRows(nrows, ncols, 1)
	for _, typ := range kqTypes {
		b.Run(typ.String(), func(b *testing.B) {
			rb, _ := ir.RowBytes(typ, ncols)
			q := make([]byte, nrows*int(rb))
			if _, err := QuantizeRows(typ, x, ncols, nil, q); err != nil {
				b.Fatal(err)
			}
			dst := make([]float32, len(x))
			b.SetBytes(int64(4 * len(x)))
			b.ResetTimer()
			for range b.N {
				if _, err := DequantizeRows(typ, q, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestKQuantsSpecialValues feeds infinities, NaNs, huge and subnormal
// values through every k-quant path: the output is ggml's business, but
// the kernels must not panic (no computed value is ever used as an index).
func TestKQuantsSpecialValues(t *testing.T) {
	const ncols = 512
	specials := []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.MaxFloat32, -math.MaxFloat32, 1e-45, -1e-40, 0}
	x := kqRandomRows(4, ncols, 11)
	for i := range x {
		if i%3 == 0 {
			x[i] = specials[(i/3)%len(specials)]
		}
	}
	qw := make([]float32, ncols)
	for i := range qw {
		qw[i] = specials[i%len(specials)]
	}
	for _, typ := range kqTypes {
		for _, w := range [][]float32{nil, qw} {
			rb, _ := ir.RowBytes(typ, ncols)
			q := make([]byte, 4*int(rb))
			if _, err := QuantizeRows(typ, x, ncols, w, q); err != nil {
				t.Fatal(err)
			}
			if _, err := DequantizeRows(typ, q, make([]float32, len(x))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

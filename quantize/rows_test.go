package quantize

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// qvRowsData returns nrows rows of ncols values mixing the shapes that
// stress the kernels (normal, zeros, constant, tiny, huge, sparse,
// one-sided) and an importance vector.
func qvRowsData(seed uint64, nrows, ncols int) (x, imatrix []float32) {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	x = make([]float32, nrows*ncols)
	for row := 0; row < nrows; row++ {
		xr := x[row*ncols : (row+1)*ncols]
		for j := range xr {
			v := float32(r.NormFloat64())
			switch row % 8 {
			case 1:
				v = 0
			case 2:
				v = -1.25
			case 3:
				v *= 1e-9
			case 4:
				v *= 2e3
			case 5:
				if r.IntN(8) != 0 {
					v = 0
				}
			case 6:
				v = float32(math.Abs(float64(v)))
			}
			xr[j] = v
		}
	}
	imatrix = make([]float32, ncols)
	for j := range imatrix {
		imatrix[j] = float32(r.ExpFloat64())
	}
	return x, imatrix
}

// qvRegisteredTypes returns the qvTypes that have a kernel.
func qvRegisteredTypes(t testing.TB) []ir.DType {
	var ts []ir.DType
	for _, name := range qvTypes {
		typ, err := ir.ParseDType(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := Lookup(typ); ok {
			ts = append(ts, typ)
		}
	}
	return ts
}

// qvQuantize quantizes x through QuantizeRows into a fresh buffer.
func qvQuantize(t *testing.T, typ ir.DType, x []float32, ncols int, im []float32) []byte {
	t.Helper()
	rb, err := ir.RowBytes(typ, int64(ncols))
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, int(rb)*(len(x)/ncols))
	if _, err := QuantizeRows(typ, x, ncols, im, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestQuantizeRowsChunkIndependent checks that a kernel's bytes do not
// depend on how rows are grouped into calls (all at once, row by row, or
// uneven chunks), nor on the call being repeated, and that dequantizing
// all blocks at once equals dequantizing them row by row.
func TestQuantizeRowsChunkIndependent(t *testing.T) {
	const nrows = 9
	for _, typ := range qvRegisteredTypes(t) {
		ncols := 2 * 256 // a whole number of blocks for every type
		x, imatrix := qvRowsData(uint64(typ), nrows, ncols)
		rb, _ := ir.RowBytes(typ, int64(ncols))
		rowBytes := int(rb)
		for _, im := range [][]float32{nil, imatrix} {
			name := typ.String()
			if im != nil {
				name += "/imatrix"
			}
			t.Run(name, func(t *testing.T) {
				all := qvQuantize(t, typ, x, ncols, im)
				if again := qvQuantize(t, typ, x, ncols, im); !bytes.Equal(all, again) {
					t.Fatal("two identical calls gave different bytes")
				}
				var byRow []byte
				for r := 0; r < nrows; r++ {
					byRow = append(byRow, qvQuantize(t, typ, x[r*ncols:(r+1)*ncols], ncols, im)...)
				}
				if !bytes.Equal(all, byRow) {
					t.Fatalf("all rows at once differ from row by row (first difference in row %d)", qvFirstDiff(all, byRow)/rowBytes)
				}
				var chunked []byte
				for _, c := range [][2]int{{0, 2}, {2, 7}, {7, nrows}} {
					chunked = append(chunked, qvQuantize(t, typ, x[c[0]*ncols:c[1]*ncols], ncols, im)...)
				}
				if !bytes.Equal(all, chunked) {
					t.Fatalf("uneven chunks differ from all rows at once (first difference in row %d)", qvFirstDiff(all, chunked)/rowBytes)
				}

				deqAll := make([]float32, len(x))
				if _, err := DequantizeRows(typ, all, deqAll); err != nil {
					t.Fatal(err)
				}
				for r := 0; r < nrows; r++ {
					deqRow := make([]float32, ncols)
					if _, err := DequantizeRows(typ, all[r*rowBytes:(r+1)*rowBytes], deqRow); err != nil {
						t.Fatal(err)
					}
					if !slices.EqualFunc(deqRow, deqAll[r*ncols:(r+1)*ncols], qvSameFloat) {
						t.Fatalf("row %d dequantizes differently alone and with the others", r)
					}
				}
			})
		}
	}
}

// TestQuantizeSmallRows checks that every kernel handles the smallest
// valid rows (one block) and rows of several blocks, with and without an
// importance vector, and gives back a finite dequantization of finite
// input.
func TestQuantizeSmallRows(t *testing.T) {
	for _, typ := range qvRegisteredTypes(t) {
		bs := typ.BlockSize()
		if bs == 1 {
			bs = 32
		}
		for _, ncols := range []int{bs, 3 * bs} {
			x, imatrix := qvRowsData(uint64(ncols), 8, ncols)
			for _, im := range [][]float32{nil, imatrix} {
				q := qvQuantize(t, typ, x, ncols, im)
				y := make([]float32, len(x))
				if _, err := DequantizeRows(typ, q, y); err != nil {
					t.Fatal(err)
				}
				for i, v := range y {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) && typ != ir.F16 {
						t.Fatalf("%s ncols %d imatrix %v: value %d (%g) dequantizes to %g", typ, ncols, im != nil, i, x[i], v)
					}
				}
			}
		}
	}
}

func qvFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func qvSameFloat(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
}

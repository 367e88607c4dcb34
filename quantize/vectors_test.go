package quantize

// Shared harness for ggml's reference vectors (see manifest.json next to
// them). It is table-driven over qvTypes: a type is checked as soon as it
// has a registered kernel, and skipped (with the reason) until then.
//
// Layout of a vector directory:
//
//	manifest.json                      sets (dir, n_per_row, row names), per-output size and sha256
//	<set>/inputs.f32                   rows x n_per_row float32 LE
//	<set>/imatrix.f32                  n_per_row importance weights
//	<set>/<TYPE>[.imatrix].bin         ggml_quantize_chunk output without/with the imatrix
//	<set>/<TYPE>[.imatrix].dequant.f32 ggml's dequantization of that output
//
// Two sources are checked: the full fixtures under $GEMMACONV_FIXTURES
// (all sets, every type must be present), and the copies committed under
// goldens/quant-vectors (n256 only; a type whose files are not committed
// there is skipped).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// qvTypes lists every type ggml's reference vectors cover, by ggml name.
var qvTypes = []string{
	"F16", "BF16",
	"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
	"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
	"IQ4_NL", "IQ4_XS",
	"TQ1_0", "TQ2_0",
	"MXFP4",
}

// qvGoldens is the committed copy of the n256 vectors, relative to this
// package's directory (where go test runs).
const qvGoldens = "../goldens/quant-vectors"

type qvManifest struct {
	Reference string  `json:"reference"`
	Sets      []qvSet `json:"sets"`
}

type qvSet struct {
	Dir     string              `json:"dir"`
	NPerRow int                 `json:"n_per_row"`
	Rows    []string            `json:"rows"`
	Imatrix string              `json:"imatrix"`
	Outputs map[string]qvOutput `json:"outputs"`
}

type qvOutput struct {
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func TestQuantVectorsFixtures(t *testing.T) {
	root := os.Getenv("GEMMACONV_FIXTURES")
	if root == "" {
		t.Skip("GEMMACONV_FIXTURES is not set; it names the shared fixtures directory holding quant-vectors/ (the committed n256 copies are checked by TestQuantVectorsGoldens)")
	}
	qvRun(t, filepath.Join(root, "quant-vectors"), false)
}

func TestQuantVectorsGoldens(t *testing.T) {
	qvRun(t, qvGoldens, true)
}

// qvRun checks every type of qvTypes against the vectors under dir. With
// partial set, sets and type files missing from dir are skipped instead of
// failing.
func qvRun(t *testing.T, dir string, partial bool) {
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("reading manifest: %v", err)
	}
	var m qvManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("parsing %s/manifest.json: %v", dir, err)
	}
	if len(m.Sets) == 0 {
		t.Fatalf("%s/manifest.json lists no sets", dir)
	}
	checked := 0
	for _, set := range m.Sets {
		setDir := filepath.Join(dir, set.Dir)
		if _, err := os.Stat(filepath.Join(setDir, "inputs.f32")); partial && errors.Is(err, fs.ErrNotExist) {
			t.Logf("%s: not in %s, skipped", set.Dir, dir)
			continue
		}
		inputs := qvReadF32(t, filepath.Join(setDir, "inputs.f32"))
		imatrix := qvReadF32(t, filepath.Join(setDir, set.Imatrix))
		if set.NPerRow <= 0 || len(inputs)%set.NPerRow != 0 || len(imatrix) != set.NPerRow {
			t.Fatalf("%s: %d inputs, %d imatrix values for rows of %d", set.Dir, len(inputs), len(imatrix), set.NPerRow)
		}
		if len(set.Rows) != 0 && len(inputs)/set.NPerRow != len(set.Rows) {
			t.Fatalf("%s: %d rows in inputs.f32, manifest names %d", set.Dir, len(inputs)/set.NPerRow, len(set.Rows))
		}
		for _, name := range qvTypes {
			t.Run(set.Dir+"/"+name, func(t *testing.T) {
				typ, err := ir.ParseDType(name)
				if err != nil {
					t.Fatal(err)
				}
				k, ok := Lookup(typ)
				if !ok || k.Quantize == nil || k.Dequantize == nil {
					t.Skipf("no kernel registered for %s yet", name)
				}
				if partial {
					if _, err := os.Stat(filepath.Join(setDir, name+".bin")); errors.Is(err, fs.ErrNotExist) {
						t.Skipf("%s vectors are not committed under %s", name, setDir)
					}
				}
				qvCheckType(t, set, setDir, typ, inputs, imatrix)
				checked++
			})
		}
	}
	if checked == 0 {
		t.Errorf("no type was checked against %s", dir)
	}
}

// qvCheckType checks one type of one set, without and with the imatrix.
func qvCheckType(t *testing.T, set qvSet, setDir string, typ ir.DType, inputs, imatrix []float32) {
	name := typ.String()
	for _, withIM := range []bool{false, true} {
		key, im := name, []float32(nil)
		if withIM {
			key, im = name+".imatrix", imatrix
		}
		if _, listed := set.Outputs[key]; !listed && withIM {
			// The generator lists no imatrix output for types whose ggml
			// quantizer never reads it (F16, BF16): with an imatrix the
			// bytes must be the plain ones.
			key = name
		}
		out, listed := set.Outputs[key]
		if !listed {
			t.Errorf("%s: manifest lists no output %s", set.Dir, key)
			continue
		}
		want := qvReadFile(t, filepath.Join(setDir, key+".bin"))
		if len(want) != out.Bytes {
			t.Fatalf("%s/%s.bin: %d bytes, manifest says %d", set.Dir, key, len(want), out.Bytes)
		}
		if sum := sha256.Sum256(want); hex.EncodeToString(sum[:]) != out.SHA256 {
			t.Fatalf("%s/%s.bin: sha256 does not match the manifest", set.Dir, key)
		}

		got := make([]byte, len(want))
		n, err := QuantizeRows(typ, inputs, set.NPerRow, im, got)
		if err != nil {
			t.Fatalf("quantize %s (imatrix %v): %v", name, withIM, err)
		}
		if n != len(want) {
			t.Fatalf("quantize %s (imatrix %v): wrote %d bytes, ggml %d", name, withIM, n, len(want))
		}
		if !bytes.Equal(got, want) {
			t.Errorf("quantize %s (imatrix %v) differs from ggml's %s.bin: %s",
				name, withIM, key, qvDescribeBytes(typ, set, got, want))
		}

		if withIM && key == name {
			continue // the dequantization of key was checked without the imatrix
		}
		wantF := qvReadF32(t, filepath.Join(setDir, key+".dequant.f32"))
		gotF := make([]float32, len(wantF))
		n, err = DequantizeRows(typ, want, gotF)
		if err != nil {
			t.Fatalf("dequantize %s: %v", key, err)
		}
		if n != len(wantF) {
			t.Fatalf("dequantize %s: %d values, ggml %d", key, n, len(wantF))
		}
		if msg := qvDescribeFloats(set, gotF, wantF); msg != "" {
			t.Errorf("dequantize %s.bin differs from ggml's %s.dequant.f32: %s", key, key, msg)
		}
	}
}

// qvDescribeBytes reports where got first differs from want (row, row name,
// block, byte in block, both blocks in hex) and how many blocks differ.
func qvDescribeBytes(typ ir.DType, set qvSet, got, want []byte) string {
	ts := typ.TypeSize()
	rowBytes := len(want)
	if set.NPerRow > 0 {
		rowBytes = set.NPerRow / typ.BlockSize() * ts
	}
	first, nbad := -1, 0
	for b := 0; b+ts <= len(want); b += ts {
		if !bytes.Equal(got[b:b+ts], want[b:b+ts]) {
			if first < 0 {
				first = b
			}
			nbad++
		}
	}
	if first < 0 {
		return "lengths differ"
	}
	off := first
	for got[off] == want[off] {
		off++
	}
	row := first / rowBytes
	return fmt.Sprintf("%d of %d blocks differ; first at row %d (%s) block %d, byte %d of the block: got %02x want %02x\n  got  %x\n  want %x",
		nbad, len(want)/ts, row, qvRowName(set, row), (first%rowBytes)/ts, off-first, got[off], want[off],
		got[first:first+ts], want[first:first+ts])
}

// qvDescribeFloats compares float bits (NaNs of any payload count as
// equal) and reports the first difference and the number of differences,
// or "" when all match.
func qvDescribeFloats(set qvSet, got, want []float32) string {
	first, nbad := -1, 0
	for i := range want {
		g, w := got[i], want[i]
		if math.Float32bits(g) == math.Float32bits(w) || (g != g && w != w) {
			continue
		}
		if first < 0 {
			first = i
		}
		nbad++
	}
	if first < 0 {
		return ""
	}
	row, col := first/set.NPerRow, first%set.NPerRow
	return fmt.Sprintf("%d of %d values differ; first at row %d (%s) column %d: got %g (%08x) want %g (%08x)",
		nbad, len(want), row, qvRowName(set, row), col,
		got[first], math.Float32bits(got[first]), want[first], math.Float32bits(want[first]))
}

func qvRowName(set qvSet, row int) string {
	if row < len(set.Rows) {
		return set.Rows[row]
	}
	return "?"
}

func qvReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// qvReadF32 reads a little-endian float32 file.
func qvReadF32(t testing.TB, path string) []float32 {
	t.Helper()
	b := qvReadFile(t, path)
	if len(b)%4 != 0 {
		t.Fatalf("%s: %d bytes is not whole float32s", path, len(b))
	}
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

// TestQuantVectorsGoldensMatchFixtures checks that the committed goldens
// are byte copies of the shared fixtures they were taken from.
func TestQuantVectorsGoldensMatchFixtures(t *testing.T) {
	root := os.Getenv("GEMMACONV_FIXTURES")
	if root == "" {
		t.Skip("GEMMACONV_FIXTURES is not set; nothing to compare the committed goldens with")
	}
	src := filepath.Join(root, "quant-vectors")
	err := filepath.WalkDir(qvGoldens, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".md") {
			return err
		}
		rel, _ := filepath.Rel(qvGoldens, path)
		a, b := qvReadFile(t, path), qvReadFile(t, filepath.Join(src, rel))
		if !bytes.Equal(a, b) {
			t.Errorf("goldens/quant-vectors/%s differs from the shared fixture", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package pytorch

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var fuzzLimits = Limits{MaxObjects: 1 << 16, MaxStack: 1 << 14, MaxMarks: 256, MaxMemo: 1 << 14, MaxBytes: 1 << 22}

// pickleSeeds are CPython's pickles of every protocol, torch's data.pkl,
// and a few hand-made ones.
func pickleSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for i := 0; i <= 5; i++ {
		b, err := os.ReadFile(filepath.Join(goldens, "pickles", "proto"+string(rune('0'+i))+".pkl"))
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	zr, err := zip.OpenReader(filepath.Join(goldens, "views", "zip.pt"))
	if err != nil {
		f.Fatal(err)
	}
	defer zr.Close()
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "data.pkl") {
			rc, _ := zf.Open()
			b, _ := io.ReadAll(rc)
			rc.Close()
			seeds = append(seeds, b)
		}
	}
	seeds = append(seeds,
		tensorPickle("w", "FloatStorage", "0", 6, 0, []int32{2, 3}, []int32{3, 1}),
		[]byte("cos\nsystem\n(S'id'\ntR."),
		[]byte("(S'a\\'b\\n\\x41'\nVcaf\\u00e9\nI01\nL123L\nF-2.5\nt."),
		[]byte{0x80, 2, '}', 'q', 0, 'X', 1, 0, 0, 0, 'a', 'h', 0, 's', '.'},
	)
	return seeds
}

// FuzzPickle runs arbitrary bytes through the unpickler with a storage
// resolver: it must return a value or an error, never panic (the
// last-resort recover counts as a failure) and never run past its limits.
func FuzzPickle(f *testing.F) {
	for _, s := range pickleSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := UnpickleBytes(data, UnpickleOptions{Limits: fuzzLimits, Persistent: newStorageTable(false).load})
		if err != nil {
			if strings.Contains(err.Error(), "internal error") {
				t.Fatal(err)
			}
			return
		}
		ts, _, err := Flatten(v)
		if err != nil {
			return
		}
		for _, x := range ts {
			// No storage is bound: Reader must fail cleanly.
			if _, err := x.Reader(); err == nil {
				t.Fatalf("%s: reader without data", x.Name)
			}
			if _, err := x.Rows(0, 1); err != nil && len(x.Shape) > 0 && x.Shape[0] >= 1 {
				t.Fatalf("%s: Rows(0,1) of shape %v: %v", x.Name, x.Shape, err)
			}
		}
	})
}

// FuzzOpenZip opens arbitrary bytes as a checkpoint file (zip or legacy)
// and reads every tensor it yields.
func FuzzOpenZip(f *testing.F) {
	for _, name := range []string{"views/zip.pt", "views/legacy.pt", "views/proto4.pt", "gemma1_int8.ckpt"} {
		b, err := os.ReadFile(filepath.Join(goldens, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.CreateHeader(&zip.FileHeader{Name: "m/data.pkl", Method: zip.Deflate})
	w.Write(tensorPickle("w", "FloatStorage", "0", 6, 0, []int32{2, 3}, []int32{3, 1}))
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "m/data/0", Method: zip.Deflate})
	w.Write(make([]byte, 24))
	zw.Close()
	f.Add(buf.Bytes())
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "f.pt")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ck, err := openCheckpoint(path, fuzzLimits)
		if err != nil {
			if strings.Contains(err.Error(), "internal error") {
				t.Fatal(err)
			}
			return
		}
		defer ck.Close()
		ts, _, err := Flatten(ck.Root)
		if err != nil {
			return
		}
		for _, x := range ts {
			if x.NBytes() > 1<<20 {
				continue
			}
			r, err := x.Reader()
			if err != nil {
				continue
			}
			b := make([]byte, x.NBytes())
			r.ReadAt(b, 0)
		}
	})
}

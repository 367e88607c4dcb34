package edge

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to the reader, from memory and from a
// file; inputs it accepts must map to a model or fail cleanly, read every
// tensor, hash every tensor, and write back to a bundle that reads the same.
func FuzzOpen(f *testing.F) {
	m := smallModel()
	_, plain := writeBundle(f, m)
	m.Extra = allValues()
	_, rich := writeBundle(f, m)
	f.Add(plain)
	f.Add(rich)
	f.Add(plain[:PreambleSize+8])
	bad := bytes.Clone(plain)
	binary.LittleEndian.PutUint64(bad[8:], 1<<40)
	f.Add(bad)
	f.Add([]byte("GCVB\x01\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, perr := Parse("fuzz", data)
		path := filepath.Join(t.TempDir(), "in.gcvb")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		of, oerr := Open(path)
		if (perr == nil) != (oerr == nil) {
			t.Fatalf("Parse error %v but Open error %v", perr, oerr)
		}
		if oerr != nil {
			return
		}
		defer of.Close()
		for _, ti := range pf.Tensors {
			b := make([]byte, ti.Size)
			if _, err := pf.Window(ti).ReadAt(b, 0); err != nil {
				t.Fatalf("tensor %s: %v", ti.Name, err)
			}
		}
		_ = pf.verifyHashes()
		md, err := pf.Model()
		if err != nil {
			return
		}
		out := filepath.Join(dir, "out.gcvb")
		if err := Write(out, md, WriteOptions{}); err != nil {
			t.Fatalf("accepted model does not write back: %v", err)
		}
		back, err := OpenModel(out)
		if err != nil {
			t.Fatalf("written model does not read back: %v", err)
		}
		defer back.Close()
		if err := Verify(out); err != nil {
			t.Fatal(err)
		}
	})
}

package gguf

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// FuzzOpen feeds arbitrary bytes to the reader (from memory and from a
// file) and, for inputs it accepts, checks that every tensor window reads,
// that the model mapping does not panic, and that writing the metadata and
// tensors back yields a file that reads back the same.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	small := filepath.Join(dir, "small.gguf")
	if err := WriteFile(small, allTypesKV(), testTensors(), WriteOptions{}); err != nil {
		f.Fatal(err)
	}
	// A tiny Gemma 3 model exercises the GGUF -> IR mapping.
	tiny := filepath.Join(dir, "tiny.gguf")
	if err := Write(tiny, tinyModel(tinyConfig(ir.Gemma3), true), WriteOptions{}); err != nil {
		f.Fatal(err)
	}
	for _, p := range []string{small, tiny, filepath.Join("..", "..", "goldens", "gguf", "imatrix.gguf")} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, perr := Parse("fuzz", data)
		tf, err := os.CreateTemp(dir, "in-*.gguf")
		if err != nil {
			t.Fatal(err)
		}
		path := tf.Name()
		defer os.Remove(path)
		_, err = tf.Write(data)
		if cerr := tf.Close(); err == nil {
			err = cerr
		}
		if err != nil {
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
		var ts []*ir.Tensor
		for _, ti := range pf.Tensors {
			w := pf.Window(ti)
			buf := make([]byte, min(w.Size(), 1<<20))
			if _, err := w.ReadAt(buf, 0); err != nil && len(buf) > 0 {
				t.Fatalf("tensor %s: %v", ti.Name, err)
			}
			ts = append(ts, &ir.Tensor{Name: ti.Name, DType: ti.Type, Shape: ti.Shape(), Source: w})
		}
		if m, err := modelFromFile(pf); err == nil {
			if _, err := Metadata(m); err != nil {
				t.Logf("metadata of accepted model: %v", err)
			}
		}
		// Rewrite in memory (WriteFile's fsyncs would dominate the run).
		kvs, align, err := prepareKV(pf.KV, 0)
		if err != nil {
			t.Fatalf("metadata of an accepted file rejected: %v", err)
		}
		infos, total, err := layout(ts, align)
		if err != nil {
			t.Fatalf("tensors of an accepted file rejected: %v", err)
		}
		var buf bytes.Buffer
		if err := encodeFile(bufio.NewWriter(&buf), kvs, ts, infos, total, align, nil); err != nil {
			t.Fatalf("rewriting an accepted file: %v", err)
		}
		back, err := Parse("rewrite", buf.Bytes())
		if err != nil {
			t.Fatalf("reading the rewrite: %v", err)
		}
		if !bytes.Equal(encodeKVs(back.KV), encodeKVs(pf.KV)) {
			t.Fatal("metadata changed in the rewrite")
		}
		for i, ti := range back.Tensors {
			if !bytes.Equal(back.Window(ti).Bytes(), pf.Window(pf.Tensors[i]).Bytes()) {
				t.Fatalf("tensor %s changed in the rewrite", ti.Name)
			}
		}
	})
}

// encodeKVs is the metadata's encoding, for comparisons that must treat
// NaNs bit for bit.
func encodeKVs(kvs []ir.KV) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	e := &encoder{w: w}
	for _, kv := range kvs {
		e.str(kv.Key)
		e.value(kv.Value, true)
	}
	w.Flush()
	return buf.Bytes()
}

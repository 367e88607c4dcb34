package mmapfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileAndWindow(t *testing.T) {
	data := []byte("0123456789abcdef")
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	opened, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*File{"mapped": opened, "bytes": FromBytes(data)} {
		if f.Size() != int64(len(data)) {
			t.Errorf("%s: size %d", name, f.Size())
		}
		w := f.Window("test: tensor x", 4, 8)
		buf := make([]byte, 8)
		if n, err := w.ReadAt(buf, 0); n != 8 || err != nil || string(buf) != "456789ab" {
			t.Errorf("%s: whole window: %d %v %q", name, n, err, buf)
		}
		if n, err := w.ReadAt(buf, 5); n != 3 || err != io.EOF || string(buf[:3]) != "9ab" {
			t.Errorf("%s: read past the end: %d %v", name, n, err)
		}
		if _, err := w.ReadAt(buf, -1); err == nil || !strings.Contains(err.Error(), "tensor x") {
			t.Errorf("%s: negative offset: %v", name, err)
		}
		if !bytes.Equal(w.Bytes(), data[4:12]) {
			t.Errorf("%s: Bytes %q", name, w.Bytes())
		}
		w.ReleaseRange(0, 8) // must not disturb the contents
		w.Release()
		if n, _ := w.ReadAt(buf, 0); n != 8 || string(buf) != "456789ab" {
			t.Errorf("%s: after release: %q", name, buf)
		}
		if err := f.Close(); err != nil {
			t.Error(err)
		}
		if _, err := w.ReadAt(buf, 0); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Errorf("%s: read after Close: %v", name, err)
		}
		if w.Bytes() != nil {
			t.Errorf("%s: Bytes after Close", name)
		}
	}
	if _, err := Open(t.TempDir()); !errors.Is(err, ErrNotRegular) {
		t.Errorf("directory: %v", err)
	}
}

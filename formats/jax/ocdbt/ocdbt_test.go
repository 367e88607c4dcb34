package ocdbt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const goldens = "../../../goldens/jax/neuroglancer"

// neuroglancerDirs returns the directory holding files/ and ocdbt/: the
// shared fixtures when GEMMACONV_FIXTURES is set, else the goldens copy.
func neuroglancerDir() string {
	if fx := os.Getenv("GEMMACONV_FIXTURES"); fx != "" {
		return filepath.Join(fx, "orbax-real", "neuroglancer", "kvstore")
	}
	return goldens
}

// expectedFiles reads files/ as key → value.
func expectedFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	want := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		want[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

func TestFilesDatabases(t *testing.T) {
	base := neuroglancerDir()
	want := expectedFiles(t, filepath.Join(base, "files"))
	dbs, _ := filepath.Glob(filepath.Join(base, "ocdbt", "files_*.ocdbt"))
	if len(dbs) < 2 {
		t.Fatalf("found %d files_* databases in %s", len(dbs), base)
	}
	for _, dir := range dbs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			db, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			vals, err := db.List("")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			var keys []string
			for _, v := range vals {
				b, err := v.Bytes(1 << 20)
				if err != nil {
					t.Fatal(err)
				}
				got[v.Key()] = string(b)
				keys = append(keys, v.Key())
			}
			if !sort.StringsAreSorted(keys) {
				t.Errorf("List order %q", keys)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("contents\n got %q\nwant %q", got, want)
			}
			for k, w := range want {
				v, err := db.Get(k)
				if err != nil {
					t.Fatalf("Get(%q): %v", k, err)
				}
				b, _ := v.Bytes(1 << 20)
				if string(b) != w {
					t.Errorf("Get(%q) = %q, want %q", k, b, w)
				}
			}
			for _, k := range []string{"", "aa", "ba", "baz", "baz/y", "zzz", "\xff"} {
				if _, err := db.Get(k); !errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%q) = %v, want ErrNotFound", k, err)
				}
			}
			for prefix, n := range map[string]int{"baz/": 3, "b": 4, "": len(want), "q": 0, "baz/first": 1} {
				vs, err := db.List(prefix)
				if err != nil || len(vs) != n {
					t.Errorf("List(%q) = %d values, %v; want %d", prefix, len(vs), err, n)
				}
			}
		})
	}
}

func TestMultiVersion(t *testing.T) {
	base := neuroglancerDir()
	dbs, _ := filepath.Glob(filepath.Join(base, "ocdbt", "multi_version_*.ocdbt"))
	if len(dbs) == 0 {
		t.Fatal("no multi_version databases")
	}
	for _, dir := range dbs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			db, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			vs, err := db.Versions()
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != 200 {
				t.Fatalf("%d versions, want 200", len(vs))
			}
			for i, v := range vs {
				if v.Generation != uint64(i+1) {
					t.Fatalf("version %d has generation %d", i, v.Generation)
				}
			}
			// Generation g holds key1..keyg.
			for _, g := range []int{1, 2, 17, 100, 200} {
				at := db.At(vs[g-1])
				vals, err := at.List("")
				if err != nil {
					t.Fatal(err)
				}
				if len(vals) != g {
					t.Errorf("generation %d: %d keys", g, len(vals))
				}
				v, err := at.Get(fmt.Sprintf("key%d", g))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := v.Bytes(100)
				if string(b) != fmt.Sprintf("version %d", g) {
					t.Errorf("generation %d: key%d = %q", g, g, b)
				}
				if _, err := at.Get(fmt.Sprintf("key%d", g+1)); g < 200 && !errors.Is(err, ErrNotFound) {
					t.Errorf("generation %d: key%d: %v", g, g+1, err)
				}
			}
		})
	}
}

// copyDir copies a database into a temporary directory for corruption.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruption(t *testing.T) {
	src := filepath.Join(goldens, "ocdbt", "files_min_arity.ocdbt")
	// Every byte of the manifest: a checksum (or framing) error, no panic.
	man, err := os.ReadFile(filepath.Join(src, "manifest.ocdbt"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range man {
		b := append([]byte(nil), man...)
		b[i] ^= 0x01
		_, err := DecodeManifest(b, "manifest.ocdbt")
		if err == nil {
			t.Fatalf("flipping manifest byte %d went unnoticed", i)
		}
		if i >= 12 && !errors.Is(err, ErrChecksum) {
			t.Errorf("byte %d: %v, want a checksum error", i, err)
		}
	}

	dir := copyDir(t, src)
	flip(t, filepath.Join(dir, "manifest.ocdbt"), 20)
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "manifest.ocdbt") {
		t.Errorf("corrupt manifest: %v", err)
	}

	// A B+tree node: corrupt a byte inside the root node's range.
	dir = copyDir(t, src)
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := db.Version().Root
	db.Close()
	flip(t, filepath.Join(dir, root.File.Path()), int64(root.Offset+root.Length/2))
	db, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.List("")
	db.Close()
	var fe *FormatError
	if !errors.Is(err, ErrChecksum) || !errors.As(err, &fe) || fe.File != root.File.Path() || fe.FileOffset != int64(root.Offset) {
		t.Errorf("corrupt node: %v", err)
	}

	// Truncated data file: the node reference lies beyond its end.
	dir = copyDir(t, src)
	p := filepath.Join(dir, root.File.Path())
	st, _ := os.Stat(p)
	os.Truncate(p, st.Size()/2)
	db, _ = Open(dir)
	if _, err := db.List(""); err == nil || !strings.Contains(err.Error(), "beyond") {
		t.Errorf("truncated data file: %v", err)
	}
	db.Close()

	// Missing data file.
	dir = copyDir(t, src)
	os.RemoveAll(filepath.Join(dir, "d"))
	db, _ = Open(dir)
	if _, err := db.Get("a"); err == nil || !strings.Contains(err.Error(), "is missing") || !strings.Contains(err.Error(), root.File.Path()) {
		t.Errorf("missing data file: %v", err)
	}
	db.Close()

	// Missing manifest.
	dir = copyDir(t, src)
	os.Remove(filepath.Join(dir, "manifest.ocdbt"))
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "manifest.ocdbt is missing") {
		t.Errorf("missing manifest: %v", err)
	}
}

func TestCheckRelPath(t *testing.T) {
	for _, p := range []string{"../x", "d/../../x", "/etc/passwd", "", "a\\b"} {
		if checkRelPath(p) == nil {
			t.Errorf("%q accepted", p)
		}
	}
	for _, p := range []string{"d/0123", "ocdbt.process_0/d/ab"} {
		if err := checkRelPath(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
}

// TestNumberedManifest rebuilds a database with the numbered manifest
// kind: manifest.ocdbt holds only the config, manifest.<generation> the
// versions.
func TestNumberedManifest(t *testing.T) {
	src := filepath.Join(goldens, "ocdbt", "files_min_arity.ocdbt")
	dir := copyDir(t, src)
	man, err := os.ReadFile(filepath.Join(dir, "manifest.ocdbt"))
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := envelope(man, manifestMagic, "manifest", "manifest.ocdbt", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{b: body}
	readConfig(r)
	cfg := append([]byte(nil), body[:r.pos]...)
	cfg[16] = 1 // manifest_kind: numbered
	os.WriteFile(filepath.Join(dir, "manifest.ocdbt"), frame(manifestMagic, append([]byte{0, 0}, cfg...)), 0o644)
	// Without the numbered file: a clear error.
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "numbered") {
		t.Fatalf("got %v", err)
	}
	os.WriteFile(filepath.Join(dir, "manifest.0000000000000001"), frame(manifestMagic, append([]byte{0, 0}, body...)), 0o644)
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := db.Get("c")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := v.Bytes(10); string(b) != "bar" {
		t.Errorf("c = %q", b)
	}
}

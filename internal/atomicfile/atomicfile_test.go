package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteSuccess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Write(path, func(f *os.File) error {
		_, err := f.WriteString("new content")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new content" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "out.bin" {
		t.Errorf("directory holds %v, want only out.bin", got)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != Perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), Perm)
		}
	}
}

func TestWriteFailureKeepsExisting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	var tmpName string
	err := Write(path, func(f *os.File) error {
		tmpName = f.Name()
		if filepath.Dir(tmpName) != dir {
			t.Errorf("temporary file %s is not in %s", tmpName, dir)
		}
		f.WriteString("partial")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := os.Stat(tmpName); !os.IsNotExist(err) {
		t.Errorf("temporary file %s still exists (%v)", tmpName, err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "old" {
		t.Fatalf("existing file now %q, %v", b, err)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only out.bin", got)
	}
}

func TestFailureLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	err := Write(path, func(*os.File) error { return errors.New("boom") })
	if err == nil {
		t.Fatal("want an error")
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("directory holds %v, want nothing", got)
	}
}

func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x")
	f, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort() // a no-op after Commit
	if _, err := f.WriteAt([]byte("hdr"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if b, err := os.ReadFile(path); err != nil || string(b) != "hdr" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if err := f.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}

	g, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	g.WriteString("discarded")
	g.Abort()
	if b, _ := os.ReadFile(path); string(b) != "hdr" {
		t.Errorf("after Abort the target holds %q", b)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only x", got)
	}
}

func TestCreateMissingDir(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "no", "such", "file")); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}

func TestRenameFailureRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	// The target is a non-empty directory, so the rename fails.
	path := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(path, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Write(path, func(f *os.File) error { _, err := f.WriteString("x"); return err })
	if err == nil {
		t.Fatal("want an error renaming over a directory")
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "target" {
		t.Errorf("directory holds %v, want only target", got)
	}
}

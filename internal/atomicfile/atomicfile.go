// Package atomicfile writes output files so that a reader of the target
// path sees either the complete new file or whatever was there before:
// data goes to a temporary file in the target's directory, which is
// synced and renamed into place only once it is complete.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Perm is the permission a committed file gets; it is set with chmod, so
// the umask does not narrow it.
const Perm os.FileMode = 0o644

// File is a temporary file that becomes the target path on Commit. Write
// to it through the embedded *os.File; end it with Commit or Abort.
type File struct {
	*os.File
	path string // the target
	dir  string // the target's directory, synced after the rename
	done bool   // Commit or Abort has run
}

// Create makes a temporary file named ".<base>.tmp-*" in path's directory.
// The caller writes to it and then calls Commit; calling Abort (safe to
// defer, a no-op after Commit) removes it on any other outcome.
func Create(path string) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &File{File: tmp, path: path, dir: dir}, nil
}

// Commit gives the file mode Perm, syncs and closes it, and renames it
// over the target path, then syncs the directory so the rename is
// durable (a failure there is ignored: some filesystems cannot sync a
// directory, and the file is already in place). On error the temporary
// file is removed and the target is untouched.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("%s: already committed or aborted", f.Name())
	}
	f.done = true
	name := f.Name()
	fail := func(err error) error {
		f.File.Close()
		os.Remove(name)
		return err
	}
	if err := f.Chmod(Perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("syncing %s: %w", name, err))
	}
	if err := f.File.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("closing %s: %w", name, err)
	}
	if err := os.Rename(name, f.path); err != nil {
		os.Remove(name)
		return err
	}
	if d, err := os.Open(f.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Abort closes and removes the temporary file, leaving the target path
// untouched. It does nothing after Commit or a previous Abort.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.Name())
}

// Write creates path atomically: fn writes the content to a temporary
// file, which is committed if fn returns nil and removed otherwise.
func Write(path string, fn func(f *os.File) error) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := fn(f.File); err != nil {
		return err
	}
	return f.Commit()
}

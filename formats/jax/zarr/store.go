package zarr

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gemmaconv/gemmaconv/formats/jax/ocdbt"
)

// ErrNotFound is wrapped by Store.Get errors for absent keys.
var ErrNotFound = errors.New("zarr: key not found")

// Value is a stored value read lazily.
type Value interface {
	io.ReaderAt
	Size() int64
}

// Store is a key-value view of a zarr hierarchy: keys are slash-separated
// paths such as "a/.zarray" or "a/c/0/0".
type Store interface {
	// Get returns the value under key; absent keys give an error wrapping
	// ErrNotFound.
	Get(key string) (Value, error)
	// List returns the keys that start with prefix, sorted.
	List(prefix string) ([]string, error)
	// String names the store in error messages.
	String() string
}

// DirStore is a Store over a plain directory: the key is the file's path
// relative to Root.
type DirStore struct{ Root string }

// String names the store by its directory.
func (s DirStore) String() string { return s.Root }

func (s DirStore) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.ContainsRune(key, 0) {
		return "", fmt.Errorf("zarr: %s: invalid key %q", s.Root, key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == ".." {
			return "", fmt.Errorf("zarr: %s: key %q leaves the store", s.Root, key)
		}
	}
	return filepath.Join(s.Root, filepath.FromSlash(key)), nil
}

// Get stats the file for key; its bytes are read on demand.
func (s DirStore) Get(key string) (Value, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("zarr: %s: %w", p, ErrNotFound)
		}
		return nil, fmt.Errorf("zarr: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("zarr: %s: %w (not a regular file)", p, ErrNotFound)
	}
	return &fileValue{path: p, size: st.Size()}, nil
}

// List walks the directory for files under prefix.
func (s DirStore) List(prefix string) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(s.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.Root, p)
		if err != nil {
			return err
		}
		k := filepath.ToSlash(rel)
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	sort.Strings(keys)
	return keys, err
}

// fileValue opens its file for each read: chunk files are read in large
// pieces, and holding one descriptor per chunk would exhaust the limit.
type fileValue struct {
	path string
	size int64
}

// Size is the file size at Get time.
func (f *fileValue) Size() int64 { return f.size }

// ReadAt opens the file and reads from it.
func (f *fileValue) ReadAt(p []byte, off int64) (int, error) {
	h, err := os.Open(f.path)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return h.ReadAt(p, off)
}

// OCDBTStore is a Store over an OCDBT database, optionally below a key
// prefix.
type OCDBTStore struct {
	DB     *ocdbt.DB
	Prefix string
}

// String names the database and prefix.
func (s OCDBTStore) String() string {
	if s.Prefix == "" {
		return s.DB.Dir() + " (OCDBT)"
	}
	return s.DB.Dir() + " (OCDBT, prefix " + s.Prefix + ")"
}

// Get looks the key up in the B+tree; the value is read lazily.
func (s OCDBTStore) Get(key string) (Value, error) {
	v, err := s.DB.Get(s.Prefix + key)
	if err != nil {
		if errors.Is(err, ocdbt.ErrNotFound) {
			return nil, fmt.Errorf("zarr: %s: %q: %w", s, key, ErrNotFound)
		}
		return nil, err
	}
	return v, nil
}

// List returns the keys under prefix, without the store's own prefix.
func (s OCDBTStore) List(prefix string) ([]string, error) {
	var keys []string
	err := s.DB.Walk(s.Prefix+prefix, func(v *ocdbt.Value) error {
		keys = append(keys, v.Key()[len(s.Prefix):])
		return nil
	})
	return keys, err
}

// Package ocdbt reads tensorstore's OCDBT key-value store (Optionally
// Cooperative Distributed B+Tree), the storage layer of Orbax checkpoints.
//
// A database is a directory holding manifest.ocdbt (configuration and the
// version tree) and data files (usually d/<128-bit hex id>) that hold
// encoded B+tree nodes, version tree nodes and out-of-line values. Open
// reads the manifest; List and Get walk the B+tree of the latest version,
// reading nodes on demand. Values are lazy: a Value records a file, offset
// and length and is read through io.ReaderAt only when asked.
//
// The format is documented in tensorstore's kvstore/ocdbt/index.rst; this
// is an independent reader written from that specification.
package ocdbt

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrNotFound is returned by Get for an absent key.
var ErrNotFound = errors.New("key not found")

// DB is an open OCDBT database. It is safe for concurrent use.
type DB struct {
	root     string // directory
	manifest *Manifest
	version  Version
	*shared
}

// shared is the state every view of one database (At) shares.
type shared struct {
	mu    sync.Mutex
	files map[string]*dataFile
	nodes map[Ref]*node
}

type dataFile struct {
	f    *os.File
	size int64
	err  error
}

// maxCachedNodes bounds the decoded-node cache; nodes are at most a few
// MiB each, and a walk touches one path of the tree at a time.
const maxCachedNodes = 256

// Open reads the manifest of the database in dir. When the manifest is of
// the numbered kind, the newest manifest.<16 hex digits> file is used.
func Open(dir string) (*DB, error) {
	name := filepath.Join(dir, "manifest.ocdbt")
	data, err := readSmallFile(name, maxDecodedManifestBytes)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ocdbt: %s: manifest.ocdbt is missing (not an OCDBT database, or its manifest was deleted): %w", dir, err)
		}
		return nil, fmt.Errorf("ocdbt: %w", err)
	}
	m, err := DecodeManifest(data, name)
	if err != nil {
		return nil, err
	}
	if m.Config.ManifestKind == 1 {
		if m, err = openNumbered(dir, m.Config); err != nil {
			return nil, err
		}
	}
	db := &DB{root: dir, manifest: m, version: m.Latest(), shared: &shared{files: map[string]*dataFile{}, nodes: map[Ref]*node{}}}
	return db, nil
}

// openNumbered finds the newest numbered manifest, manifest.%016x.
func openNumbered(dir string, cfg Config) (*Manifest, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ocdbt: %w", err)
	}
	var best string
	var bestGen uint64
	for _, e := range ents {
		n := e.Name()
		hex, ok := strings.CutPrefix(n, "manifest.")
		if !ok || len(hex) != 16 {
			continue
		}
		g, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || g == 0 {
			continue
		}
		if g > bestGen {
			best, bestGen = n, g
		}
	}
	if best == "" {
		return nil, fmt.Errorf("ocdbt: %s: manifest.ocdbt is of the numbered kind but no manifest.<generation> file exists", dir)
	}
	name := filepath.Join(dir, best)
	data, err := readSmallFile(name, maxDecodedManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("ocdbt: %w", err)
	}
	m, err := DecodeManifest(data, name)
	if err != nil {
		return nil, err
	}
	if m.Config.ManifestKind != 0 || len(m.Versions) == 0 {
		return nil, fmt.Errorf("ocdbt: %s: a numbered manifest must hold versions", name)
	}
	if m.Config.UUID != cfg.UUID {
		return nil, fmt.Errorf("ocdbt: %s: database uuid differs from manifest.ocdbt's", name)
	}
	if g := m.Latest().Generation; g != bestGen {
		return nil, fmt.Errorf("ocdbt: %s: latest generation %d does not match the file name", name, g)
	}
	return m, nil
}

func readSmallFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes exceeds the %d-byte limit for a manifest", name, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if err := readFull(f, b, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// Dir is the database directory.
func (db *DB) Dir() string { return db.root }

// Manifest returns the decoded manifest.
func (db *DB) Manifest() *Manifest { return db.manifest }

// Version is the version the DB reads (the latest unless At chose another).
func (db *DB) Version() Version { return db.version }

// At returns a view of the database as of version v (one of Versions());
// it shares db's open files, so close only one of them.
func (db *DB) At(v Version) *DB {
	c := *db
	c.version = v
	return &c
}

// Versions lists every version the database retains, oldest first,
// reading the version tree nodes that the manifest references.
func (db *DB) Versions() ([]Version, error) {
	var out []Version
	var visit func(ref VersionNodeRef, depth int) error
	visit = func(ref VersionNodeRef, depth int) error {
		if depth > 64 {
			return fmt.Errorf("ocdbt: %s: version tree deeper than 64 levels", ref.Ref.File.Path())
		}
		data, err := db.readRef(ref.Ref, maxDecodedManifestBytes, "version tree node")
		if err != nil {
			return err
		}
		h, leaves, interior, err := DecodeVersionNode(data, ref.Ref)
		if err != nil {
			return err
		}
		where := fmt.Sprintf("ocdbt: %s: version tree node at offset %d", ref.Ref.File.Path(), ref.Ref.Offset)
		if h != ref.Height {
			return fmt.Errorf("%s has height %d, its parent expects %d", where, h, ref.Height)
		}
		if h == 0 {
			if leaves[len(leaves)-1].Generation != ref.Generation {
				return fmt.Errorf("%s ends at generation %d, its parent expects %d", where, leaves[len(leaves)-1].Generation, ref.Generation)
			}
			out = append(out, leaves...)
			return nil
		}
		if len(interior) == 0 || interior[len(interior)-1].Generation != ref.Generation {
			return fmt.Errorf("%s does not end at generation %d", where, ref.Generation)
		}
		for _, c := range interior {
			c.Height = h - 1
			if err := visit(c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range db.manifest.VersionNodes {
		if err := visit(n, 0); err != nil {
			return nil, err
		}
	}
	out = append(out, db.manifest.Versions...)
	for i := 1; i < len(out); i++ {
		if out[i].Generation <= out[i-1].Generation {
			return nil, fmt.Errorf("ocdbt: %s: version tree lists generation %d after %d", db.root, out[i].Generation, out[i-1].Generation)
		}
	}
	return out, nil
}

// Close closes the data files the database opened.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	var errs []error
	for _, f := range db.files {
		if f.f != nil {
			errs = append(errs, f.f.Close())
		}
	}
	db.files = map[string]*dataFile{}
	db.nodes = map[Ref]*node{}
	return errors.Join(errs...)
}

// file opens a data file (once) and returns it with its size.
func (db *DB) file(id DataFileID) (*dataFile, error) {
	p := id.Path()
	db.mu.Lock()
	defer db.mu.Unlock()
	if df, ok := db.files[p]; ok {
		return df, df.err
	}
	df := &dataFile{}
	db.files[p] = df
	if err := checkRelPath(p); err != nil {
		df.err = fmt.Errorf("ocdbt: %s: data file %q: %w", db.root, p, err)
		return df, df.err
	}
	f, err := os.Open(filepath.Join(db.root, filepath.FromSlash(p)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			hint := ""
			if dir := filepath.Dir(filepath.Join(db.root, filepath.FromSlash(p))); !dirExists(dir) {
				hint = fmt.Sprintf(" (its directory %s/ does not exist)", filepath.ToSlash(filepath.Dir(p)))
			}
			df.err = fmt.Errorf("ocdbt: %s: data file %s is missing%s: %w", db.root, p, hint, err)
		} else {
			df.err = fmt.Errorf("ocdbt: %s: data file %s: %w", db.root, p, err)
		}
		return df, df.err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		df.err = fmt.Errorf("ocdbt: %s: %w", p, err)
		return df, df.err
	}
	df.f, df.size = f, st.Size()
	return df, nil
}

// checkRelPath rejects data file paths that would leave the database
// directory.
func checkRelPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.ContainsRune(p, 0) {
		return errors.New("not a relative path inside the database")
	}
	for _, s := range strings.Split(p, "/") {
		if s == ".." {
			return errors.New("path leaves the database directory")
		}
	}
	return nil
}

// readRef reads the bytes a reference points at, checking the range
// against the file's size before allocating.
func (db *DB) readRef(ref Ref, limit uint64, what string) ([]byte, error) {
	df, err := db.file(ref.File)
	if err != nil {
		return nil, err
	}
	end := ref.Offset + ref.Length
	if end < ref.Offset || end > uint64(df.size) {
		return nil, fmt.Errorf("ocdbt: %s: %s at offset %d, length %d lies beyond the file's %d bytes", ref.File.Path(), what, ref.Offset, ref.Length, df.size)
	}
	if ref.Length > limit {
		return nil, fmt.Errorf("ocdbt: %s: %s at offset %d is %d bytes, over the %d-byte limit", ref.File.Path(), what, ref.Offset, ref.Length, limit)
	}
	b := make([]byte, ref.Length)
	if err := readFull(df.f, b, int64(ref.Offset)); err != nil {
		return nil, fmt.Errorf("ocdbt: %s: reading %s at offset %d: %w", ref.File.Path(), what, ref.Offset, err)
	}
	return b, nil
}

// node returns the decoded B+tree node at ref, which must have height h.
func (db *DB) node(ref Ref, h uint8) (*node, error) {
	db.mu.Lock()
	nd, ok := db.nodes[ref]
	db.mu.Unlock()
	if !ok {
		data, err := db.readRef(ref, maxDecodedNodeBytes, "B+tree node")
		if err != nil {
			return nil, err
		}
		if nd, err = decodeNode(data, ref); err != nil {
			return nil, err
		}
		db.mu.Lock()
		if len(db.nodes) >= maxCachedNodes {
			clear(db.nodes)
		}
		db.nodes[ref] = nd
		db.mu.Unlock()
	}
	if nd.height != h {
		return nil, fmt.Errorf("ocdbt: %s: B+tree node at offset %d has height %d, its parent expects %d", ref.File.Path(), ref.Offset, nd.height, h)
	}
	return nd, nil
}

// Value is a stored value. Small values are held inline; others are read
// from their data file on demand.
type Value struct {
	db     *DB
	key    string
	inline []byte
	ref    Ref
	direct bool
}

// Key is the value's key.
func (v *Value) Key() string { return v.key }

// Size is the value's length in bytes.
func (v *Value) Size() int64 {
	if v.direct {
		return int64(len(v.inline))
	}
	return int64(v.ref.Length)
}

// Inline reports whether the value is stored inside its B+tree leaf.
func (v *Value) Inline() bool { return v.direct }

// Ref returns the value's location; meaningful only when !Inline().
func (v *Value) Ref() Ref { return v.ref }

// ReadAt reads from the value's bytes; it implements io.ReaderAt.
func (v *Value) ReadAt(p []byte, off int64) (int, error) {
	size := v.Size()
	if off < 0 {
		return 0, fmt.Errorf("ocdbt: value %q: negative offset %d", v.key, off)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if int64(len(p)) > size-off {
		want = p[:size-off]
	}
	if v.direct {
		n := copy(want, v.inline[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	df, err := v.db.file(v.ref.File)
	if err != nil {
		return 0, fmt.Errorf("value %q: %w", v.key, err)
	}
	if v.ref.Offset+v.ref.Length > uint64(df.size) {
		return 0, fmt.Errorf("ocdbt: %s: value %q at offset %d, length %d lies beyond the file's %d bytes", v.ref.File.Path(), v.key, v.ref.Offset, v.ref.Length, df.size)
	}
	if err := readFull(df.f, want, int64(v.ref.Offset)+off); err != nil {
		return 0, fmt.Errorf("ocdbt: %s: value %q at offset %d: %w", v.ref.File.Path(), v.key, int64(v.ref.Offset)+off, err)
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(want), nil
}

// Bytes reads the whole value; limit guards against allocating for a
// hostile length (the caller's idea of a sane size).
func (v *Value) Bytes(limit int64) ([]byte, error) {
	if v.Size() > limit {
		return nil, fmt.Errorf("ocdbt: value %q is %d bytes, over the %d-byte limit", v.key, v.Size(), limit)
	}
	if v.direct {
		return v.inline, nil
	}
	b := make([]byte, v.Size())
	if _, err := v.ReadAt(b, 0); err != nil && !(err == io.EOF && len(b) == 0) {
		return nil, err
	}
	return b, nil
}

// Get returns the value stored under key, or an error wrapping ErrNotFound.
func (db *DB) Get(key string) (*Value, error) {
	v := db.version
	if v.Root.Missing() {
		return nil, fmt.Errorf("ocdbt: %s: %q: %w (empty database)", db.root, key, ErrNotFound)
	}
	ref, h, prefix := v.Root, v.RootHeight, ""
	for {
		nd, err := db.node(ref, h)
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(key, prefix) {
			return nil, fmt.Errorf("ocdbt: %q: %w", key, ErrNotFound)
		}
		rel := key[len(prefix):]
		// Last entry whose key is <= rel.
		i := sort.Search(len(nd.keys), func(i int) bool { return nd.keys[i] > rel }) - 1
		if nd.height == 0 {
			if i < 0 || nd.keys[i] != rel {
				return nil, fmt.Errorf("ocdbt: %q: %w", key, ErrNotFound)
			}
			return db.value(nd, i, key), nil
		}
		if i < 0 {
			return nil, fmt.Errorf("ocdbt: %q: %w", key, ErrNotFound)
		}
		sp := nd.keys[i][:nd.subtreePrefix[i]]
		if !strings.HasPrefix(rel, sp) {
			return nil, fmt.Errorf("ocdbt: %q: %w", key, ErrNotFound)
		}
		ref, h, prefix = nd.children[i], nd.height-1, prefix+sp
	}
}

func (db *DB) value(nd *node, i int, key string) *Value {
	if nd.inline[i] != nil {
		return &Value{db: db, key: key, inline: nd.inline[i], direct: true}
	}
	return &Value{db: db, key: key, ref: nd.values[i]}
}

// List returns the values whose keys start with prefix, in key order.
func (db *DB) List(prefix string) ([]*Value, error) {
	var out []*Value
	err := db.Walk(prefix, func(v *Value) error {
		out = append(out, v)
		return nil
	})
	return out, err
}

// Walk calls fn for each value whose key starts with prefix, in key order.
func (db *DB) Walk(prefix string, fn func(*Value) error) error {
	v := db.version
	if v.Root.Missing() {
		return nil
	}
	budget := maxWalkNodes
	return db.walk(v.Root, v.RootHeight, "", prefix, fn, &budget)
}

// maxWalkNodes bounds the nodes one Walk visits: a hostile tree can
// reference the same node from many parents.
const maxWalkNodes = 1 << 20

// walk visits the subtree at ref whose keys all start with acc.
func (db *DB) walk(ref Ref, h uint8, acc, prefix string, fn func(*Value) error, budget *int) error {
	if !strings.HasPrefix(acc, prefix) && !strings.HasPrefix(prefix, acc) {
		return nil
	}
	if *budget--; *budget < 0 {
		return fmt.Errorf("ocdbt: %s: walk visits more than %d B+tree nodes", db.root, maxWalkNodes)
	}
	nd, err := db.node(ref, h)
	if err != nil {
		return err
	}
	end, bounded := prefixEnd(prefix)
	for i, k := range nd.keys {
		full := acc + k
		if bounded && full >= end {
			return nil // sorted: the rest lies past the prefix range
		}
		if nd.height == 0 {
			if strings.HasPrefix(full, prefix) {
				if err := fn(db.value(nd, i, full)); err != nil {
					return err
				}
			}
			continue
		}
		// Child i covers keys in [full, acc+keys[i+1]).
		if i+1 < len(nd.keys) && acc+nd.keys[i+1] <= prefix {
			continue
		}
		if err := db.walk(nd.children[i], nd.height-1, acc+k[:nd.subtreePrefix[i]], prefix, fn, budget); err != nil {
			return err
		}
	}
	return nil
}

// prefixEnd returns the smallest string greater than every string with
// the prefix, or false when there is none (empty or all-0xff prefix).
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// Package orbax reads Orbax checkpoints: the directory layouts that
// orbax.checkpoint's PyTree/Standard checkpoint handlers write, in which a
// tree of arrays is stored as zarr arrays (v2 or v3) either inside an
// OCDBT database (manifest.ocdbt, d/, ocdbt.process_N/) or as one
// directory per array (the older layout without OCDBT).
//
// A checkpoint is direct (the tree sits in the directory itself) or
// composite (_CHECKPOINT_METADATA's item_handlers maps checkpointable names
// such as "state" to handlers, each in its own subdirectory). Open finds
// the tree checkpointables, reads _METADATA (tree key paths and value
// types) when present and otherwise discovers arrays from the store, and
// opens every array lazily. Irregularities that Orbax itself tolerates
// (missing metadata files, stray or deleted checkpointables) become
// Warnings; missing data (d/, manifest.ocdbt) is an error naming it.
package orbax

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/formats/jax/ocdbt"
	"github.com/gemmaconv/gemmaconv/formats/jax/zarr"
)

// File names of the Orbax layout.
const (
	CheckpointMetadataFile = "_CHECKPOINT_METADATA"
	TreeMetadataFile       = "_METADATA"
	ManifestFile           = "manifest.ocdbt"
	processPrefix          = "ocdbt.process_"
	maxJSON                = 64 << 20
)

// Checkpoint is an open Orbax checkpoint.
type Checkpoint struct {
	Dir   string
	Items []*Item
	// Warnings lists what was irregular but not fatal: stray or missing
	// checkpointables, absent metadata, skipped leaves.
	Warnings []string
	// Files lists the metadata files read.
	Files []string

	dbs []*ocdbt.DB
}

// Item is one tree checkpointable.
type Item struct {
	// Name is the checkpointable's name ("state"), or "" for a direct
	// checkpoint whose tree is the directory itself.
	Name     string
	Dir      string
	UseOCDBT bool
	UseZarr3 bool
	Arrays   []*Array
	// Skipped lists leaves that are not arrays (strings, empty nodes) or
	// that Orbax marks skip_deserialize.
	Skipped []string
}

// Array is an array leaf of the tree.
type Array struct {
	// KeyPath is the leaf's path in the tree: dict keys, or list indices
	// in decimal.
	KeyPath []string
	// Name is Orbax's parameter name: KeyPath joined with ".".
	Name string
	*zarr.Array
}

// Close closes the OCDBT databases the checkpoint opened.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, db := range c.dbs {
		errs = append(errs, db.Close())
	}
	c.dbs = nil
	return errors.Join(errs...)
}

func (c *Checkpoint) warn(format string, args ...any) {
	c.Warnings = append(c.Warnings, fmt.Sprintf(format, args...))
}

// Tree returns the checkpoint's tree checkpointable: the only one, or
// when there are several the one named "state", "params" or "default".
func (c *Checkpoint) Tree() (*Item, error) {
	switch len(c.Items) {
	case 0:
		return nil, fmt.Errorf("orbax: %s: no tree checkpointable with arrays", c.Dir)
	case 1:
		return c.Items[0], nil
	}
	for _, pref := range []string{"state", "params", "default"} {
		for _, it := range c.Items {
			if it.Name == pref {
				return it, nil
			}
		}
	}
	var names []string
	for _, it := range c.Items {
		names = append(names, it.Name)
	}
	return nil, fmt.Errorf("orbax: %s: several tree checkpointables (%s); open one of their directories", c.Dir, strings.Join(names, ", "))
}

// IsCheckpoint reports whether dir looks like an Orbax checkpoint or one
// of its tree checkpointables.
func IsCheckpoint(dir string) bool {
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return false
	}
	for _, f := range []string{TreeMetadataFile, ManifestFile, CheckpointMetadataFile, "orbax.checkpoint"} {
		if exists(filepath.Join(dir, f)) {
			return true
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && looksLikeTree(filepath.Join(dir, e.Name())) {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// looksLikeTree reports whether dir holds tree checkpointable files.
func looksLikeTree(dir string) bool {
	if exists(filepath.Join(dir, ManifestFile)) || exists(filepath.Join(dir, TreeMetadataFile)) {
		return true
	}
	m, _ := filepath.Glob(filepath.Join(dir, processPrefix+"*"))
	return len(m) > 0 || hasZarrArray(dir)
}

// hasZarrArray reports whether a zarr array (.zarray or zarr.json) lies
// within a few levels of dir — the per-array layout without OCDBT, whose
// parameter names ("transformer/layer_0/attn/q_einsum.w") nest
// directories. The search is bounded so that detection stays cheap.
func hasZarrArray(dir string) bool {
	visited := 0
	found := false
	var walk func(d string, depth int)
	walk = func(d string, depth int) {
		ents, err := os.ReadDir(d)
		if err != nil {
			return
		}
		for _, e := range ents {
			if found || visited > 2000 {
				return
			}
			visited++
			n := e.Name()
			if !e.IsDir() {
				if n == ".zarray" || (n == "zarr.json" && depth > 0) {
					found = true
				}
				continue
			}
			if depth < 6 && n != "d" && !strings.HasPrefix(n, processPrefix) {
				walk(filepath.Join(d, n), depth+1)
			}
		}
	}
	walk(dir, 0)
	return found
}

// checkpointMetadata is the part of _CHECKPOINT_METADATA we use.
type checkpointMetadata struct {
	ItemHandlers json.RawMessage `json:"item_handlers"`
}

// isTreeHandler reports whether a handler class writes a tree of arrays.
func isTreeHandler(h string) bool {
	return strings.Contains(h, "PyTree") || strings.Contains(h, "StandardCheckpointHandler") ||
		strings.Contains(h, "pytree_handler") || strings.Contains(h, "standard_checkpoint_handler")
}

// Open reads the checkpoint in dir.
func Open(dir string) (_ *Checkpoint, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("orbax: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("orbax: %s is not a directory", dir)
	}
	c := &Checkpoint{Dir: dir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	// _CHECKPOINT_METADATA says whether the checkpoint is direct (one
	// handler, a string) or composite (a map of checkpointables).
	var handlers map[string]string
	direct := false
	cmPath := filepath.Join(dir, CheckpointMetadataFile)
	if data, err := readJSONFile(cmPath); err == nil {
		c.Files = append(c.Files, cmPath)
		var cm checkpointMetadata
		if err := json.Unmarshal(data, &cm); err != nil {
			c.warn("%s is not valid JSON (%v); the layout is inferred from the directory", CheckpointMetadataFile, err)
		} else if len(cm.ItemHandlers) == 0 || string(cm.ItemHandlers) == "null" {
			c.warn("%s has no item_handlers; the layout is inferred from the directory", CheckpointMetadataFile)
		} else if json.Unmarshal(cm.ItemHandlers, &handlers) != nil {
			var h string
			if json.Unmarshal(cm.ItemHandlers, &h) == nil {
				direct = true
			} else {
				c.warn("%s: item_handlers is neither a handler name nor a map", CheckpointMetadataFile)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("orbax: %w", err)
	}

	if direct || (handlers == nil && looksLikeTree(dir)) {
		it, err := c.openItem("", dir)
		if err != nil {
			return nil, err
		}
		c.Items = append(c.Items, it)
		return c, nil
	}

	// Composite: the listed tree checkpointables, then any unlisted
	// directory that looks like one.
	listed := map[string]bool{}
	var names []string
	for name := range handlers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		listed[name] = true
		if !isTreeHandler(handlers[name]) {
			continue
		}
		sub := filepath.Join(dir, name)
		if !exists(sub) {
			c.warn("checkpointable %q (%s) is listed in %s but its directory is missing", name, handlers[name], CheckpointMetadataFile)
			continue
		}
		it, err := c.openItem(name, sub)
		if err != nil {
			return nil, err
		}
		c.Items = append(c.Items, it)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("orbax: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || listed[name] {
			continue
		}
		sub := filepath.Join(dir, name)
		if !looksLikeTree(sub) {
			if handlers != nil {
				c.warn("stray directory %s/ is not listed in %s; ignored", name, CheckpointMetadataFile)
			}
			continue
		}
		if md := filepath.Join(sub, TreeMetadataFile); exists(md) && !exists(filepath.Join(sub, ManifestFile)) {
			if data, err := readJSONFile(md); err != nil || !json.Valid(data) {
				c.warn("stray checkpointable %s/: its %s is not JSON; ignored", name, TreeMetadataFile)
				continue
			}
		}
		if handlers != nil {
			c.warn("checkpointable %s/ is not listed in %s; read as a tree", name, CheckpointMetadataFile)
		}
		it, err := c.openItem(name, sub)
		if err != nil {
			return nil, err
		}
		c.Items = append(c.Items, it)
	}
	return c, nil
}

func readJSONFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJSON {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxJSON)
	}
	return b, nil
}

// leaf is one entry of _METADATA's tree_metadata.
type leaf struct {
	keyPath   []string
	valueType string
	skip      bool
}

// treeMetadata is the parsed _METADATA.
type treeMetadata struct {
	leaves   []leaf
	useOCDBT *bool
	useZarr3 *bool
}

// parseTreeMetadata reads _METADATA, keeping tree_metadata in file order
// (the tree's flattening order).
func parseTreeMetadata(data []byte) (*treeMetadata, error) {
	var top struct {
		TreeMetadata json.RawMessage `json:"tree_metadata"`
		UseOCDBT     *bool           `json:"use_ocdbt"`
		UseZarr3     *bool           `json:"use_zarr3"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, err
	}
	tm := &treeMetadata{useOCDBT: top.UseOCDBT, useZarr3: top.UseZarr3}
	if len(top.TreeMetadata) == 0 || string(top.TreeMetadata) == "null" {
		return tm, nil
	}
	dec := json.NewDecoder(bytes.NewReader(top.TreeMetadata))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("tree_metadata is not an object")
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := kt.(string)
		var e struct {
			KeyMetadata []struct {
				Key     json.RawMessage `json:"key"`
				KeyType int             `json:"key_type"`
			} `json:"key_metadata"`
			ValueMetadata struct {
				ValueType       string `json:"value_type"`
				SkipDeserialize bool   `json:"skip_deserialize"`
			} `json:"value_metadata"`
		}
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("tree_metadata[%q]: %w", key, err)
		}
		l := leaf{valueType: e.ValueMetadata.ValueType, skip: e.ValueMetadata.SkipDeserialize}
		for _, k := range e.KeyMetadata {
			var s string
			if json.Unmarshal(k.Key, &s) != nil {
				var n json.Number
				if err := json.Unmarshal(k.Key, &n); err != nil {
					return nil, fmt.Errorf("tree_metadata[%q]: key %s is not a string or number", key, k.Key)
				}
				s = n.String()
			}
			l.keyPath = append(l.keyPath, s)
		}
		if len(e.KeyMetadata) == 0 {
			l.keyPath = parseTupleKey(key)
		}
		tm.leaves = append(tm.leaves, l)
	}
	return tm, nil
}

// parseTupleKey splits an old-style key "('a', 'b')" into its parts.
func parseTupleKey(k string) []string {
	k = strings.TrimSuffix(strings.TrimPrefix(k, "("), ")")
	var out []string
	for _, p := range strings.Split(k, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if u, err := strconv.Unquote(strings.ReplaceAll(p, "'", "\"")); err == nil {
			p = u
		}
		out = append(out, p)
	}
	return out
}

// arrayValueTypes are the _METADATA value types stored as zarr arrays.
var arrayValueTypes = map[string]bool{"jax.Array": true, "np.ndarray": true, "scalar": true, "": true}

// openItem opens the tree checkpointable in dir.
func (c *Checkpoint) openItem(name, dir string) (*Item, error) {
	label := dir
	it := &Item{Name: name, Dir: dir}
	var tm *treeMetadata
	mdPath := filepath.Join(dir, TreeMetadataFile)
	if data, err := readJSONFile(mdPath); err == nil {
		c.Files = append(c.Files, mdPath)
		if tm, err = parseTreeMetadata(data); err != nil {
			return nil, fmt.Errorf("orbax: %s: %w", mdPath, err)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		c.warn("%s: no %s; arrays are discovered from the store", label, TreeMetadataFile)
	} else {
		return nil, fmt.Errorf("orbax: %w", err)
	}

	procs, _ := filepath.Glob(filepath.Join(dir, processPrefix+"*"))
	hasManifest := exists(filepath.Join(dir, ManifestFile))
	switch {
	case tm != nil && tm.useOCDBT != nil:
		it.UseOCDBT = *tm.useOCDBT
	default:
		it.UseOCDBT = hasManifest || len(procs) > 0
	}
	if tm != nil && tm.useZarr3 != nil {
		it.UseZarr3 = *tm.useZarr3
	}

	var store zarr.Store
	if it.UseOCDBT {
		if !hasManifest {
			extra := ""
			if len(procs) > 0 {
				extra = fmt.Sprintf(" (per-process databases such as %s/ exist, but the merged manifest that indexes them is missing)", filepath.Base(procs[0]))
			}
			return nil, fmt.Errorf("orbax: %s: %s is missing%s; the checkpoint's arrays cannot be read", dir, ManifestFile, extra)
		}
		db, err := ocdbt.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("orbax: %w", err)
		}
		c.dbs = append(c.dbs, db)
		c.Files = append(c.Files, filepath.Join(dir, ManifestFile))
		store = zarr.OCDBTStore{DB: db}
	} else {
		store = zarr.DirStore{Root: dir}
	}

	var leaves []leaf
	if tm != nil && len(tm.leaves) > 0 {
		leaves = tm.leaves
	} else {
		found, err := discover(store)
		if err != nil {
			return nil, fmt.Errorf("orbax: %s: listing arrays: %w", dir, err)
		}
		leaves = found
	}
	for _, l := range leaves {
		pname := strings.Join(l.keyPath, ".")
		if l.skip || !arrayValueTypes[l.valueType] {
			it.Skipped = append(it.Skipped, pname)
			c.warn("%s: leaf %s (%s) is not an array; skipped", label, pname, l.valueType)
			continue
		}
		arr, err := zarr.Open(store, pname+"/")
		if err != nil {
			return nil, fmt.Errorf("orbax: %s: array %s: %w", dir, pname, err)
		}
		// Touch the first chunk now so that missing data files surface
		// when the checkpoint is opened, not halfway through a conversion.
		if arr.Size() > 0 {
			var b [1]byte
			if _, err := arr.ReadAt(b[:], 0); err != nil {
				return nil, fmt.Errorf("orbax: %s: array %s: %w", dir, pname, err)
			}
		}
		it.Arrays = append(it.Arrays, &Array{KeyPath: l.keyPath, Name: pname, Array: arr})
	}
	return it, nil
}

// discover lists the arrays of a store without _METADATA: every key that
// ends in /.zarray or /zarr.json names one.
func discover(store zarr.Store) ([]leaf, error) {
	keys, err := store.List("")
	if err != nil {
		return nil, err
	}
	var out []leaf
	for _, k := range keys {
		var name string
		switch {
		case strings.HasSuffix(k, "/.zarray"):
			name = strings.TrimSuffix(k, "/.zarray")
		case strings.HasSuffix(k, "/zarr.json"):
			name = strings.TrimSuffix(k, "/zarr.json")
		default:
			continue
		}
		if strings.HasPrefix(name, "d/") || strings.HasPrefix(name, processPrefix) {
			continue // OCDBT internals seen through a directory store
		}
		out = append(out, leaf{keyPath: strings.Split(name, ".")})
	}
	return out, nil
}

// Package jax reads Gemma checkpoints in the JAX formats of
// google-deepmind/gemma — Orbax checkpoints (OCDBT + zarr) and flax
// msgpack files — and maps their parameter tree to gemmaconv's canonical
// IR. It registers the formats "orbax" and "flax" with ir.RegisterFormat.
//
// Both containers hold the same tree (transformer/embedder/input_embedding,
// transformer/layer_N/attn/q_einsum/w, ...); the mapping to canonical
// tensors is shared. Einsum weights are transposed lazily, a band of
// output rows at a time, and keep their stored type. See
// docs/formats-jax.md for the mapping and for which hyperparameters the
// shapes cannot tell.
package jax

import (
	"fmt"
	"os"
	"strings"

	"github.com/gemmaconv/gemmaconv/formats/jax/msgpack"
	"github.com/gemmaconv/gemmaconv/formats/jax/orbax"
	"github.com/gemmaconv/gemmaconv/formats/jax/zarr"
	"github.com/gemmaconv/gemmaconv/ir"
)

// Registered format names.
const (
	OrbaxFormat = "orbax"
	FlaxFormat  = "flax"
)

func init() {
	ir.RegisterFormat(ir.Format{Name: OrbaxFormat, Detect: DetectOrbax, Open: OpenOrbax})
	ir.RegisterFormat(ir.Format{Name: FlaxFormat, Detect: DetectFlax, Open: OpenFlax})
}

// DetectOrbax reports whether path is an Orbax checkpoint directory: it
// holds _METADATA, manifest.ocdbt, _CHECKPOINT_METADATA or
// orbax.checkpoint, or a subdirectory (checkpointable) with _METADATA or
// manifest.ocdbt.
func DetectOrbax(path string) bool { return orbax.IsCheckpoint(path) }

// DetectFlax reports whether path is a .msgpack file whose first byte
// starts a msgpack map.
func DetectFlax(path string) bool {
	if !strings.HasSuffix(path, ".msgpack") {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.Read(b[:]); err != nil {
		return false
	}
	return b[0]&0xf0 == 0x80 || b[0] == 0xde || b[0] == 0xdf
}

// OpenFlax reads a flax.serialization msgpack file of a Gemma parameter
// tree. The config comes from opts.ConfigPath, a config.json beside the
// file, or the shapes (see docs/formats-jax.md); the tokenizer from
// opts.TokenizerPath or a tokenizer.model beside the file.
func OpenFlax(path string, opts ir.OpenOptions) (_ *ir.Model, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flax: %w", err)
	}
	m := &ir.Model{Provenance: ir.Provenance{Format: FlaxFormat, Path: path, Files: []string{path}}}
	m.OnClose(f)
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("flax: %w", err)
	}
	root, err := msgpack.Parse(f, st.Size(), path)
	if err != nil {
		return nil, fmt.Errorf("flax: %w", err)
	}
	arrs, err := msgpack.Arrays(root, path)
	if err != nil {
		return nil, fmt.Errorf("flax: %w", err)
	}
	var params []*param
	for _, a := range arrs {
		p := &param{path: strings.Join(a.Path, "/"), shape: a.Shape, src: a.Reader(f),
			where: fmt.Sprintf("%s at offset %d", path, a.Segments[0].Offset)}
		dt, err := numpyDType(a.DType)
		if err != nil {
			p.dtype = ir.I8 // unusable but harmless unless the mapping needs it
			p.where += " (" + err.Error() + ")"
		} else {
			p.dtype = dt
		}
		params = append(params, p)
	}
	if err := buildModel(m, params, opts, path, false); err != nil {
		return nil, fmt.Errorf("flax: %s: %w", path, err)
	}
	return m, nil
}

// OpenOrbax reads an Orbax checkpoint of a Gemma parameter tree: a direct
// checkpoint, a composite one (the tree in a checkpointable such as
// state/), or a tree checkpointable's own directory. Config and tokenizer
// are found as for OpenFlax, looking in the directory and its parent.
func OpenOrbax(path string, opts ir.OpenOptions) (_ *ir.Model, err error) {
	ck, err := orbax.Open(path)
	if err != nil {
		return nil, err
	}
	m := &ir.Model{Provenance: ir.Provenance{Format: OrbaxFormat, Path: path}}
	m.OnClose(ck)
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	m.Provenance.Files = append(m.Provenance.Files, ck.Files...)
	m.Provenance.Notes = append(m.Provenance.Notes, ck.Warnings...)
	item, err := ck.Tree()
	if err != nil {
		return nil, err
	}
	var params []*param
	for _, a := range item.Arrays {
		p := &param{path: strings.Join(a.KeyPath, "/"), shape: a.Shape(), src: a.Array, release: a.Array.Release,
			where: fmt.Sprintf("array %s of %s", a.Name, item.Dir)}
		dt, err := zarrDType(a.DType())
		if err != nil {
			p.dtype = ir.I8
			p.where += " (" + err.Error() + ")"
		} else {
			p.dtype = dt
		}
		params = append(params, p)
	}
	if err := buildModel(m, params, opts, path, true); err != nil {
		return nil, fmt.Errorf("orbax: %s: %w", path, err)
	}
	return m, nil
}

// zarrDType maps a zarr element type to the IR type.
func zarrDType(d zarr.DType) (ir.DType, error) {
	switch {
	case d.Kind == zarr.BFloat16:
		return ir.BF16, nil
	case d.Kind == zarr.Float || d.Kind == zarr.Int:
		return numpyDType(d.String())
	}
	return 0, fmt.Errorf("zarr type %s has no IR type", d.Name)
}

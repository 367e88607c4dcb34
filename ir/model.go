// Package ir is gemmaconv's normalized model: one config, one tokenizer and
// one list of lazily read tensors with canonical (GGUF) names, whatever file
// format the model came from. Format readers produce a *Model; quantizers,
// writers and the runtime consume one.
package ir

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// Model is a Gemma text decoder in normalized form. Tensor data is not read
// until a consumer calls a tensor's Source.
type Model struct {
	Config     Config
	Tokenizer  *Tokenizer
	Tensors    []*Tensor
	Provenance Provenance
	// Extra holds metadata that is not part of the config or tokenizer but
	// travels with the model (general.file_type, provenance stamps), in the
	// order it should be written.
	Extra []KV

	closers []io.Closer
}

// KV is one metadata entry. Value is a Go value of one of the GGUF value
// types: uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32,
// float64, bool, string, or a slice of one of those.
type KV struct {
	Key   string
	Value any
}

// Provenance says where a model came from.
type Provenance struct {
	// Format is the registered format name of the reader ("safetensors", "gguf", ...).
	Format string
	// Path is what the user passed to Open.
	Path string
	// Files lists every file the reader opened, in reading order.
	Files []string
	// Notes records normalizations the reader applied (trimmed padding
	// rows, split fused tensors, ignored buffers) so a user can see them.
	Notes []string
}

// Tensor returns the tensor with the given canonical name, or nil.
func (m *Model) Tensor(name string) *Tensor {
	for _, t := range m.Tensors {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Lookup returns the Extra value stored under key.
func (m *Model) Lookup(key string) (any, bool) {
	for _, kv := range m.Extra {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// SetExtra sets or replaces an Extra entry, keeping the first position.
func (m *Model) SetExtra(key string, v any) {
	for i := range m.Extra {
		if m.Extra[i].Key == key {
			m.Extra[i].Value = v
			return
		}
	}
	m.Extra = append(m.Extra, KV{key, v})
}

// OnClose registers a resource (an mmap, an open file) released by Close.
func (m *Model) OnClose(c io.Closer) { m.closers = append(m.closers, c) }

// Derive returns a shallow copy of m that shares its resources: closing
// either closes them, so derive, use and close only the outermost model.
func (m *Model) Derive() *Model {
	c := *m
	c.Tensors = append([]*Tensor(nil), m.Tensors...)
	c.Extra = append([]KV(nil), m.Extra...)
	return &c
}

// Close releases every resource the reader holds. Tensor sources must not
// be used afterwards.
func (m *Model) Close() error {
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i].Close())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// Validate checks that the tensor set is consistent with the config: every
// tensor the architecture needs is present with the right shape, and no
// tensor is unknown. Readers call it before returning a model.
func (m *Model) Validate() error {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	want := ExpectedTensors(m.Config)
	have := map[string]*Tensor{}
	for _, t := range m.Tensors {
		if _, dup := have[t.Name]; dup {
			return fmt.Errorf("tensor %s appears twice", t.Name)
		}
		have[t.Name] = t
		if err := t.check(); err != nil {
			return err
		}
	}
	for _, w := range want {
		t := have[w.Name]
		if t == nil {
			if w.Optional {
				continue
			}
			return fmt.Errorf("tensor %s is missing (the %s config needs it)", w.Name, m.Config.Family)
		}
		if !slices.Equal(t.Shape, w.Shape) {
			return fmt.Errorf("tensor %s has shape %v, the config implies %v", w.Name, t.Shape, w.Shape)
		}
		delete(have, w.Name)
	}
	for name := range have {
		return fmt.Errorf("tensor %s is not part of a %s model", name, m.Config.Family)
	}
	return nil
}

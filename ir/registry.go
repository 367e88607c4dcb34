package ir

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Format is a model file format a reader package registers, as image
// formats register with image.RegisterFormat: callers use Open and never
// switch on format.
type Format struct {
	// Name is short and stable ("safetensors", "gguf", "pytorch", "orbax", "flax").
	Name string
	// Detect reports whether path (a file or a directory) is in this
	// format. It may read a few bytes; it must not read the whole file.
	Detect func(path string) bool
	// Open reads the metadata and returns a model with lazy tensors.
	Open func(path string, opts OpenOptions) (*Model, error)
	// Integrity, when the format stores checksums of its own, re-reads
	// the file at path and checks every one; nil for formats without.
	Integrity func(path string) error
}

// OpenOptions carries what a format cannot find in its own files.
type OpenOptions struct {
	// ConfigPath is a Hugging Face config.json for formats that carry no
	// config (PyTorch and JAX checkpoints).
	ConfigPath string
	// TokenizerPath is a SentencePiece tokenizer.model for formats that
	// carry no tokenizer.
	TokenizerPath string
	// Arch names the family ("gemma", "gemma2", "gemma3") where the files
	// cannot tell.
	Arch Family
}

var (
	formatsMu sync.RWMutex
	formats   []Format
)

// RegisterFormat makes a format known to Open. Reader packages call it
// from init; a binary imports them for their side effect.
func RegisterFormat(f Format) {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	formats = append(formats, f)
}

// Formats returns the registered formats' names in registration order.
func Formats() []string {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	var names []string
	for _, f := range formats {
		names = append(names, f.Name)
	}
	return names
}

// ErrUnknownFormat is returned by Open when no registered format claims the path.
var ErrUnknownFormat = errors.New("not a model format gemmaconv reads")

// Open detects path's format and reads it.
func Open(path string, opts OpenOptions) (*Model, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	formatsMu.RLock()
	fs := append([]Format(nil), formats...)
	formatsMu.RUnlock()
	for _, f := range fs {
		if f.Detect(path) {
			m, err := f.Open(path, opts)
			if err != nil {
				return nil, err
			}
			if m.Provenance.Format == "" {
				m.Provenance.Format = f.Name
			}
			if m.Provenance.Path == "" {
				m.Provenance.Path = path
			}
			return m, nil
		}
	}
	return nil, fmt.Errorf("%s: %w (known: %v)", path, ErrUnknownFormat, Formats())
}

// ErrNoIntegrity is returned by CheckIntegrity for a format that stores no
// checksums of its own.
var ErrNoIntegrity = errors.New("the format stores no checksums")

// CheckIntegrity runs the integrity check of the format m was read from
// on the file it was read from (m.Provenance), so callers need not know
// which formats carry checksums.
func CheckIntegrity(m *Model) error {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	for _, f := range formats {
		if f.Name == m.Provenance.Format {
			if f.Integrity == nil {
				return ErrNoIntegrity
			}
			return f.Integrity(m.Provenance.Path)
		}
	}
	return ErrNoIntegrity
}

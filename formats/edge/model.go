package edge

import (
	"errors"
	"fmt"
	"os"

	"github.com/cespare/xxhash/v2"

	"github.com/gemmaconv/gemmaconv/internal/mmapfile"
	"github.com/gemmaconv/gemmaconv/ir"
)

// FormatName is the name the reader registers with ir.
const FormatName = "bundle"

func init() {
	ir.RegisterFormat(ir.Format{
		Name:   FormatName,
		Detect: Detect,
		Open: func(path string, _ ir.OpenOptions) (*ir.Model, error) {
			return OpenModel(path)
		},
		Integrity: Verify,
	})
}

// Detect reports whether path is a regular file that starts with the
// bundle magic.
func Detect(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return false
	}
	var b [4]byte
	n, _ := f.ReadAt(b[:], 0)
	return n == 4 && string(b[:]) == Magic
}

// OpenModel reads a bundle as an ir.Model whose tensors are windows of the
// mapped file with their stored types, in canonical order (ir.SortTensors;
// the file keeps the order it was written in, llama-quantize's for a
// quantized model). The model is validated (ir.Model.Validate). Close the
// model to unmap the file.
func OpenModel(path string) (*ir.Model, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := f.Model()
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// Model returns f as an ir.Model that owns f (closing the model closes f).
func (f *File) Model() (*ir.Model, error) {
	m := &ir.Model{
		Config:     f.Config,
		Tokenizer:  f.Tokenizer,
		Extra:      f.Extra,
		Provenance: ir.Provenance{Format: FormatName, Path: f.Path, Files: []string{f.Path}},
	}
	for _, ti := range f.Tensors {
		m.Tensors = append(m.Tensors, &ir.Tensor{Name: ti.Name, DType: ti.DType,
			Shape: append([]int64(nil), ti.Shape...), Source: f.Window(ti)})
	}
	ir.SortTensors(m.Tensors)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("bundle: %s: %w", f.Path, err)
	}
	m.OnClose(f)
	return m, nil
}

// Window returns a lazy reader of t's data.
func (f *File) Window(t *TensorInfo) *Window {
	return f.src.Window(fmt.Sprintf("bundle: %s: tensor %s", f.Path, t.Name), t.Offset, t.Size)
}

// Window is one tensor's bytes in an open File. It implements io.ReaderAt,
// ir.Releaser and ir.RangeReleaser; Bytes gives the mapped data, 64-byte
// aligned, or nil where the file is not memory-mapped.
type Window = mmapfile.Window

// ErrHashMismatch is wrapped by Verify's error for a tensor whose bytes do
// not hash to the value in the header.
var ErrHashMismatch = errors.New("xxhash64 mismatch")

// Verify opens path as OpenModel does (every structural and model check)
// and recomputes every tensor's xxhash64, streaming in chunks and
// releasing pages behind it. It returns the first mismatch, naming the
// tensor and its byte range, wrapped around ErrHashMismatch.
func Verify(path string) error {
	f, err := Open(path)
	if err != nil {
		return err
	}
	m, err := f.Model()
	if err != nil {
		f.Close()
		return err
	}
	defer m.Close()
	return f.verifyHashes()
}

func (f *File) verifyHashes() error {
	var buf []byte
	for _, ti := range f.Tensors {
		w := f.Window(ti)
		d := xxhash.New()
		for off := int64(0); off < ti.Size; {
			n := min(int64(chunkBytes), ti.Size-off)
			if b := w.Bytes(); b != nil {
				d.Write(b[off : off+n])
			} else {
				if int64(cap(buf)) < n {
					buf = make([]byte, n)
				}
				if _, err := w.ReadAt(buf[:n], off); err != nil {
					return err
				}
				d.Write(buf[:n])
			}
			w.ReleaseRange(off, n)
			off += n
		}
		if got := d.Sum64(); got != ti.Hash {
			return &Error{Path: f.Path, Item: fmt.Sprintf("tensor %q", ti.Name), Offset: ti.Offset, Err: ErrHashMismatch,
				Msg: fmt.Sprintf("%v: data [%d, +%d) hashes to %016x, the header says %016x", ErrHashMismatch, ti.Offset, ti.Size, got, ti.Hash)}
		}
	}
	return nil
}

package ir

import (
	"fmt"
	"io"
	"sync"
)

// WithNormOffset returns a model whose norm weights follow the convention
// offset: each norm tensor's values become w + (m.NormOffset - offset),
// computed in float32 and stored as F32, and Config.NormOffset = offset.
// GGUF writers call WithNormOffset(m, 0) to store 1+w, as llama.cpp does.
// Other tensors are shared unchanged. The result shares m's resources.
func WithNormOffset(m *Model, offset float32) (*Model, error) {
	out := m.Derive()
	delta := m.Config.NormOffset - offset
	out.Config.NormOffset = offset
	if delta == 0 {
		return out, nil
	}
	for i, t := range out.Tensors {
		if !IsNormWeight(t.Name) {
			continue
		}
		switch t.DType {
		case F32, F16, BF16:
		default:
			return nil, fmt.Errorf("tensor %s: norm weight stored as %s; only F32/F16/BF16 can be re-offset", t.Name, t.DType)
		}
		n := t.NumElements()
		if n > 1<<24 {
			return nil, fmt.Errorf("tensor %s: %d elements is too large for a norm weight", t.Name, n)
		}
		out.Tensors[i] = &Tensor{Name: t.Name, DType: F32, Shape: append([]int64(nil), t.Shape...),
			Source: &offsetSource{src: t, delta: delta}}
	}
	return out, nil
}

// offsetSource adds delta to every value of a small float tensor, decoding
// it on first use (norm weights are one row of at most a few thousand).
type offsetSource struct {
	src   *Tensor
	delta float32
	once  sync.Once
	data  []byte
	err   error
}

func (s *offsetSource) ReadAt(p []byte, off int64) (int, error) {
	s.once.Do(s.load)
	if s.err != nil {
		return 0, s.err
	}
	if off < 0 || off > int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *offsetSource) load() {
	raw := make([]byte, s.src.Size())
	if _, err := s.src.Source.ReadAt(raw, 0); err != nil {
		s.err = fmt.Errorf("tensor %s: %w", s.src.Name, err)
		return
	}
	vals := make([]float32, s.src.NumElements())
	if err := DecodeFloats(s.src.DType, raw, vals); err != nil {
		s.err = err
		return
	}
	for i := range vals {
		vals[i] += s.delta
	}
	s.data = make([]byte, 4*len(vals))
	EncodeF32(vals, s.data)
}

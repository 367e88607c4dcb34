// Package quantize holds gemmaconv's numeric kernels (float32 rows to ggml
// blocks and back, bit-exact with ggml's reference quantizers) and the
// per-tensor policy that picks a type for each tensor.
//
// Kernels are pure functions over one or more whole rows: no I/O, no
// goroutines, no state. Callers split work into row chunks, so the bytes
// produced never depend on the number of workers.
package quantize

import (
	"fmt"
	"sync"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Kernel converts rows between float32 and one ggml type.
type Kernel struct {
	// Quantize encodes src (a whole number of rows of ncols values) into
	// dst, which holds exactly len(src)/ncols*RowBytes(ncols) bytes.
	// imatrix, when not nil, has one importance weight per column; types
	// that ignore importance weights ignore it, as ggml does.
	Quantize func(src []float32, ncols int, imatrix []float32, dst []byte)
	// Dequantize decodes src (whole blocks) into dst, one float32 per element.
	Dequantize func(src []byte, dst []float32)
}

var (
	kernelsMu sync.RWMutex
	kernels   = map[ir.DType]Kernel{}
)

// Register installs the kernel for t. Each type's file calls it from init.
func Register(t ir.DType, k Kernel) {
	kernelsMu.Lock()
	defer kernelsMu.Unlock()
	if _, dup := kernels[t]; dup {
		panic("quantize: kernel registered twice for " + t.String())
	}
	kernels[t] = k
}

// Lookup returns the kernel for t.
func Lookup(t ir.DType) (Kernel, bool) {
	kernelsMu.RLock()
	defer kernelsMu.RUnlock()
	k, ok := kernels[t]
	return k, ok
}

// QuantizeRows encodes src, a whole number of rows of ncols values, as type
// t into dst and returns the bytes written. It validates sizes first, so a
// caller's mistake is an error rather than a panic inside a kernel.
func QuantizeRows(t ir.DType, src []float32, ncols int, imatrix []float32, dst []byte) (int, error) {
	k, ok := Lookup(t)
	if !ok || k.Quantize == nil {
		return 0, fmt.Errorf("quantize: no quantizer for type %s", t)
	}
	if ncols <= 0 || len(src)%ncols != 0 {
		return 0, fmt.Errorf("quantize: %d values are not whole rows of %d", len(src), ncols)
	}
	rb, err := ir.RowBytes(t, int64(ncols))
	if err != nil {
		return 0, fmt.Errorf("quantize: %w", err)
	}
	need := int(rb) * (len(src) / ncols)
	if len(dst) < need {
		return 0, fmt.Errorf("quantize: output buffer %d bytes, need %d", len(dst), need)
	}
	if imatrix != nil && len(imatrix) != ncols {
		return 0, fmt.Errorf("quantize: importance vector has %d values for rows of %d", len(imatrix), ncols)
	}
	k.Quantize(src, ncols, imatrix, dst[:need])
	return need, nil
}

// DequantizeRows decodes src (whole blocks of type t) into dst and returns
// the number of values written.
func DequantizeRows(t ir.DType, src []byte, dst []float32) (int, error) {
	k, ok := Lookup(t)
	if !ok || k.Dequantize == nil {
		return 0, fmt.Errorf("dequantize: no dequantizer for type %s", t)
	}
	bs, ts := t.BlockSize(), t.TypeSize()
	if len(src)%ts != 0 {
		return 0, fmt.Errorf("dequantize: %d bytes are not whole %s blocks of %d bytes", len(src), t, ts)
	}
	n := len(src) / ts * bs
	if len(dst) < n {
		return 0, fmt.Errorf("dequantize: output buffer %d values, need %d", len(dst), n)
	}
	k.Dequantize(src, dst[:n])
	return n, nil
}

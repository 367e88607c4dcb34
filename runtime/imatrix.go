package runtime

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ImatrixMinRows is the fewest activation rows (tokens) a matrix product
// must have for ComputeImatrix to count it: llama-imatrix ignores products
// of fewer than 16 rows (collect_imatrix), so a chunk shorter than that
// contributes nothing, and neither does a batch tail that short.
const ImatrixMinRows = 16

// ImatrixOptions configures ComputeImatrix.
type ImatrixOptions struct {
	// BOS replaces the first token of every chunk, as llama-imatrix does
	// for vocabularies that add BOS; negative keeps each chunk's own first
	// token. DefaultImatrixOptions sets it from the model's tokenizer.
	BOS int32
	// ProcessOutput also collects output.weight, as llama-imatrix
	// --process-output does. It changes nothing for models whose output
	// projection is the tied token embedding: llama.cpp collects only a
	// tensor named output.weight. It costs the output projection of every
	// position.
	ProcessOutput bool
	// Progress, when not nil, is called after each chunk with the number
	// of chunks done and the total.
	Progress func(done, total int)
}

// DefaultImatrixOptions returns options with BOS taken from the model's
// tokenizer (-1 when it has none or does not add BOS).
func (md *Model) DefaultImatrixOptions() ImatrixOptions {
	return ImatrixOptions{BOS: md.bos}
}

// ImatrixEntry is the statistics of one weight matrix.
type ImatrixEntry struct {
	// Sums holds, per input column, the sum over every counted token of
	// the squared activation entering the matrix (llama.cpp's in_sum2).
	Sums []float64
	// Count is the number of tokens (activation rows) summed.
	Count int64
}

// ImatrixResult is an importance matrix computed by ComputeImatrix.
type ImatrixResult struct {
	// Ctx is the chunk length and Chunks the number of chunks evaluated
	// (llama.cpp's imatrix.chunk_size and imatrix.chunk_count).
	Ctx, Chunks int
	// Entries maps a weight's canonical name (blk.0.attn_q.weight) to its
	// statistics.
	Entries map[string]ImatrixEntry
}

// ComputeImatrix computes an importance matrix the way llama-imatrix
// (tools/imatrix/imatrix.cpp) defines it. The caller tokenizes the whole
// text with BOS prepended; chunk k is tokens[k·ctx : (k+1)·ctx] with its
// first token replaced by opts.BOS, run from an empty cache, every token
// evaluated. For every matrix product in the decoder blocks (attn_q, attn_k,
// attn_v, attn_output, ffn_gate, ffn_up, ffn_down; output.weight too with
// opts.ProcessOutput) it sums, per input column, the square of each
// token's activation entering the product, and counts the tokens.
// Products of fewer than ImatrixMinRows rows are skipped, as llama.cpp
// skips them. chunks <= 0 evaluates every whole chunk; at least 2·ctx
// tokens are needed, as llama-imatrix requires.
//
// The activations are the runtime's float32 ones. Squares of float32
// values are exact in float64 and each column is summed in float64 in
// token order (llama.cpp sums in float32, in its batch order), so the
// result does not depend on workers, BatchSize or caching; the sums are
// rounded to float32 only when written to a file.
func ComputeImatrix(md *Model, tokens []int32, ctx, chunks int, opts ImatrixOptions) (*ImatrixResult, error) {
	if ctx < ImatrixMinRows {
		return nil, fmt.Errorf("imatrix: context %d is too short: llama.cpp ignores matrix products of fewer than %d tokens", ctx, ImatrixMinRows)
	}
	if len(tokens) < 2*ctx {
		return nil, fmt.Errorf("imatrix: %d tokens; need at least %d for a context of %d", len(tokens), 2*ctx, ctx)
	}
	n := len(tokens) / ctx
	if chunks > 0 {
		n = min(n, chunks)
	}
	cfg := &md.Config
	output := opts.ProcessOutput && md.output.Name == "output.weight"

	acc := map[string]*ImatrixEntry{}
	workers := md.workers
	observe := func(tensor string, x []float32, rows, cols int) {
		if rows < ImatrixMinRows {
			return
		}
		if !strings.HasPrefix(tensor, "blk.") && !(output && tensor == "output.weight") {
			return
		}
		e := acc[tensor]
		if e == nil {
			e = &ImatrixEntry{Sums: make([]float64, cols)}
			acc[tensor] = e
		}
		e.Count += int64(rows)
		// Each column is summed in token order by one goroutine, so the
		// split never changes a result.
		const block = 64
		nb := (cols + block - 1) / block
		parallelFor(nb, min(workers, split(int64(rows)*int64(cols))), func(k int) {
			s := e.Sums[k*block : min((k+1)*block, cols)]
			for r := 0; r < rows; r++ {
				row := x[r*cols+k*block:]
				for j := range s {
					v := float64(row[j])
					s[j] += v * v
				}
			}
		})
	}

	st := md.NewState(ctx)
	st.SetObserver(observe)
	chunk := make([]int32, ctx)
	from := ctx // no logits: nothing after the blocks is collected
	var logits []float32
	if output {
		from = 0
		logits = make([]float32, ctx*cfg.Vocab)
	}
	for k := 0; k < n; k++ {
		copy(chunk, tokens[k*ctx:(k+1)*ctx])
		if opts.BOS >= 0 {
			chunk[0] = opts.BOS
		}
		st.Reset()
		if err := st.forward(chunk, from, logits); err != nil {
			return nil, fmt.Errorf("imatrix: chunk %d: %w", k, err)
		}
		if opts.Progress != nil {
			opts.Progress(k+1, n)
		}
	}

	if len(acc) == 0 {
		return nil, errors.New("imatrix: no matrix product was collected")
	}
	r := &ImatrixResult{Ctx: ctx, Chunks: n, Entries: make(map[string]ImatrixEntry, len(acc))}
	names := make([]string, 0, len(acc))
	for name := range acc {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		e := acc[name]
		// llama-imatrix stops on a non-finite sum; the file stores float32.
		for j, s := range e.Sums {
			if math.IsNaN(s) || s > math.MaxFloat32 {
				return nil, fmt.Errorf("imatrix: tensor %s, column %d: sum of squared activations %g is not a finite float32", name, j, s)
			}
		}
		r.Entries[name] = *e
	}
	return r, nil
}

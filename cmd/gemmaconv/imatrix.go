package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/verify"
)

func newImatrixCmd(g *globalFlags) *cobra.Command {
	var (
		src           sourceFlags
		text, out     string
		ctx, chunks   int
		processOutput bool
	)
	cmd := &cobra.Command{
		Use:   "imatrix MODEL --text FILE -o OUT.gguf [--ctx N] [--chunks N]",
		Short: "Compute an importance matrix (llama-imatrix's method) for quantize --imatrix",
		Long: "Tokenizes the whole text with BOS prepended, splits it into chunks of --ctx tokens and runs\n" +
			"each chunk from an empty cache with its first token replaced by BOS, as llama-imatrix does,\n" +
			"with the float32 reference runtime. For every matrix of the decoder blocks (attn_q/k/v/output,\n" +
			"ffn_gate/up/down; output.weight too with --process-output) it sums each input column's squared\n" +
			"activations over all tokens and writes them in llama.cpp's GGUF imatrix format, which\n" +
			"llama-quantize --imatrix and gemmaconv quantize --imatrix read.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case out == "":
				return &exitError{2, errors.New("imatrix: -o OUT.gguf is required")}
			case text == "":
				return &exitError{2, errors.New("imatrix: --text FILE is required")}
			case ctx < runtime.ImatrixMinRows:
				return &exitError{2, fmt.Errorf("imatrix: --ctx %d: want at least %d (llama.cpp ignores matrix products of fewer tokens)", ctx, runtime.ImatrixMinRows)}
			case chunks < 0:
				return &exitError{2, fmt.Errorf("imatrix: --chunks %d: want 0 (every whole chunk) or a positive count", chunks)}
			}
			if a, err1 := os.Stat(args[0]); err1 == nil {
				if b, err2 := os.Stat(out); err2 == nil && os.SameFile(a, b) {
					return &exitError{2, fmt.Errorf("imatrix: the output is the model file: %s", out)}
				}
			}
			body, err := readTextFile(text)
			if err != nil {
				return err
			}
			m, md, enc, err := openRuntime(&src, args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			stderr := cmd.ErrOrStderr()
			if c := md.Config.ContextLength; c > 0 && ctx > c && !g.quiet {
				fmt.Fprintf(stderr, "imatrix: warning: --ctx %d exceeds the model's context length %d\n", ctx, c)
			}
			tokens := verify.PromptIDs(enc, body)
			opts := md.DefaultImatrixOptions()
			opts.ProcessOutput = processOutput
			progress, finish := newChunkProgress(g, "imatrix")
			opts.Progress = progress
			r, err := runtime.ComputeImatrix(md, tokens, ctx, chunks, opts)
			finish()
			if err != nil {
				return &exitError{2, err}
			}
			// llama-imatrix records the text file as it was named.
			if err := gguf.WriteImatrix(out, imatrixFile(r, []string{text})); err != nil {
				return err
			}
			if !g.quiet {
				fmt.Fprintf(stderr, "wrote %s (%d entries, %d chunks of %d tokens; the text has %d tokens)\n",
					out, len(r.Entries), r.Chunks, r.Ctx, len(tokens))
			}
			return nil
		},
	}
	src.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&text, "text", "", "UTF-8 text file to collect activations on")
	fl.StringVarP(&out, "output", "o", "", "output imatrix GGUF path")
	fl.IntVar(&ctx, "ctx", 512, "chunk length in tokens (llama-imatrix's -c)")
	fl.IntVar(&chunks, "chunks", 0, "most chunks to evaluate; 0 = every whole chunk")
	fl.BoolVar(&processOutput, "process-output", false, "also collect output.weight (untied models only, as llama-imatrix --process-output)")
	return cmd
}

// imatrixFile converts a computed importance matrix to the file form: the
// float64 sums rounded to float32 once, one count per tensor.
func imatrixFile(r *runtime.ImatrixResult, datasets []string) *gguf.Imatrix {
	im := &gguf.Imatrix{
		Entries:    make(map[string]gguf.ImatrixEntry, len(r.Entries)),
		Datasets:   datasets,
		ChunkCount: uint32(r.Chunks),
		ChunkSize:  uint32(r.Ctx),
	}
	for name, e := range r.Entries {
		sums := make([]float32, len(e.Sums))
		for i, s := range e.Sums {
			sums[i] = float32(s)
		}
		im.Entries[name] = gguf.ImatrixEntry{Sums: sums, Counts: []int64{e.Count}}
	}
	return im
}

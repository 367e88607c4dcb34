package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/formats/edge"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

func newBundleCmd(g *globalFlags) *cobra.Command {
	var (
		src             sourceFlags
		out, typ        string
		threads         int
		allowRequantize bool
	)
	cmd := &cobra.Command{
		Use:   "bundle SRC -o OUT.gcvb",
		Short: "Write a model as a gemmaconv bundle (.gcvb), optionally quantized",
		Long: `Write a checkpoint (any format gemmaconv reads) as a gemmaconv bundle: one
memory-mappable file with the config, tokenizer, metadata and every tensor,
each tensor 64-byte aligned and checksummed (xxhash64; see docs/bundle.md).

Without --type tensors keep their stored types and norms their convention.
With --type the model is quantized with that llama-quantize preset
(` + strings.Join(quantize.PresetNames(), ", ") + `), exactly as
'gemmaconv quantize' would quantize it to GGUF.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return &exitError{2, errors.New("bundle: -o OUT.gcvb is required")}
			}
			if threads < 0 {
				return &exitError{2, fmt.Errorf("--threads %d: want 0 (all cores) or a positive count", threads)}
			}
			if a, err1 := os.Stat(args[0]); err1 == nil {
				if b, err2 := os.Stat(out); err2 == nil && os.SameFile(a, b) {
					return &exitError{2, fmt.Errorf("bundle: input and output are the same file: %s", out)}
				}
			}
			var ft quantize.FileType
			if typ != "" {
				var err error
				if ft, err = quantize.ParsePreset(typ); err != nil {
					return &exitError{2, fmt.Errorf("--type %w", err)}
				}
			}
			m, err := src.open(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			model := m
			if typ != "" {
				res, err := quantize.Prepare(m, quantize.Options{
					Plan:    quantize.PlanOptions{FileType: ft, AllowRequantize: allowRequantize},
					Threads: threads, Version: version,
				})
				if err != nil {
					if errors.Is(err, quantize.ErrRequantize) {
						return &exitError{2, err}
					}
					return err
				}
				model = res.Model
			}
			progress, finish := newProgress(g, "bundle")
			err = edge.Write(out, model, edge.WriteOptions{Progress: progress})
			finish()
			if err != nil {
				return err
			}
			if !g.quiet {
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%d tensors, %.2f MiB of tensor data)\n", out, len(model.Tensors), float64(ir.Describe(model).Bytes)/(1<<20))
			}
			return nil
		},
	}
	src.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "output bundle path")
	fl.StringVar(&typ, "type", "", "quantize with this preset (Q4_K_M, Q8_0, ...); default: keep stored types")
	fl.IntVar(&threads, "threads", 0, "quantization workers (0: all cores); the output does not depend on it")
	fl.BoolVar(&allowRequantize, "allow-requantize", false, "with --type, allow converting tensors that are already quantized")
	return cmd
}

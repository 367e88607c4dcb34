package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

type sourceFlags struct {
	config    string
	tokenizer string
	arch      string
}

func (s *sourceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.config, "config", "", "Hugging Face config.json, for checkpoints that carry none")
	cmd.Flags().StringVar(&s.tokenizer, "tokenizer", "", "SentencePiece tokenizer.model, for checkpoints that carry none")
	cmd.Flags().StringVar(&s.arch, "arch", "", "model family where files cannot tell: gemma, gemma2 or gemma3")
}

func (s *sourceFlags) open(path string) (*ir.Model, error) {
	opts := ir.OpenOptions{ConfigPath: s.config, TokenizerPath: s.tokenizer, Arch: ir.Family(s.arch)}
	switch opts.Arch {
	case "", ir.Gemma1, ir.Gemma2, ir.Gemma3:
	default:
		return nil, &exitError{2, fmt.Errorf("--arch %q: want gemma, gemma2 or gemma3", s.arch)}
	}
	return ir.Open(path, opts)
}

func newConvertCmd(g *globalFlags) *cobra.Command {
	var (
		src     sourceFlags
		out     string
		outtype string
	)
	cmd := &cobra.Command{
		Use:   "convert SRC -o OUT.gguf",
		Short: "Convert a checkpoint to an f32, f16 or bf16 GGUF file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return &exitError{2, fmt.Errorf("convert: -o OUT.gguf is required")}
			}
			m, err := src.open(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			var t ir.DType
			switch strings.ToLower(outtype) {
			case "":
				t, err = sourceFloatType(m)
				if err != nil {
					return &exitError{2, err}
				}
			case "f32":
				t = ir.F32
			case "f16":
				t = ir.F16
			case "bf16":
				t = ir.BF16
			default:
				return &exitError{2, fmt.Errorf("--outtype %q: want f32, f16 or bf16 (use quantize for quantized types)", outtype)}
			}
			gm, err := ir.WithNormOffset(m, 0)
			if err != nil {
				return err
			}
			plan, err := quantize.FloatPlan(gm, t)
			if err != nil {
				return err
			}
			cm, err := quantize.Convert(gm, plan, quantize.ConvertOptions{})
			if err != nil {
				return err
			}
			cm.SetExtra("general.file_type", uint32(quantize.FloatFileType(t)))
			progress, finish := newProgress(g, "convert")
			err = gguf.Write(out, cm, gguf.WriteOptions{Progress: progress})
			finish()
			if err != nil {
				return err
			}
			if !g.quiet {
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%s, %d tensors)\n", out, t, len(cm.Tensors))
			}
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "output GGUF path")
	cmd.Flags().StringVar(&outtype, "outtype", "", "f32, f16 or bf16 (default: the source's float type)")
	return cmd
}

// sourceFloatType is the float type most of the model's matrices are
// stored in, the default output type of convert.
func sourceFloatType(m *ir.Model) (ir.DType, error) {
	count := map[ir.DType]int64{}
	for _, t := range m.Tensors {
		if len(t.Shape) > 1 {
			count[t.DType] += t.NumElements()
		}
	}
	var best ir.DType
	var n int64 = -1
	for _, t := range []ir.DType{ir.F32, ir.F16, ir.BF16} {
		if count[t] > n {
			best, n = t, count[t]
		}
	}
	for t, c := range count {
		if !t.IsFloat() && c > 0 {
			return 0, fmt.Errorf("the source holds %s tensors; give --outtype f32, f16 or bf16 to dequantize", t)
		}
	}
	return best, nil
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
	"github.com/gemmaconv/gemmaconv/verify"
)

type quantizeFlags struct {
	src             sourceFlags
	out             string
	bits            int
	typ             string
	imatrix         string
	pure            bool
	tensorTypes     []string
	outputType      string
	embdType        string
	leaveOutput     bool
	threads         int
	dryRun          bool
	allowRequantize bool
	report          string
	noSourceHash    bool
}

func newQuantizeCmd(g *globalFlags) *cobra.Command {
	f := &quantizeFlags{}
	cmd := &cobra.Command{
		Use:   "quantize SRC -o OUT.gguf",
		Short: "Quantize a checkpoint to GGUF with llama-quantize's presets",
		Long: `Quantize a checkpoint (any format gemmaconv reads) to a GGUF file whose
tensors are exactly what llama.cpp's convert_hf_to_gguf.py followed by
llama-quantize produce: the same type for every tensor and the same bytes.

--bits 4 is Q4_K_M and --bits 8 is Q8_0; --type picks any preset
(` + strings.Join(quantize.PresetNames(), ", ") + `).
Without --bits or --type the preset is Q4_K_M.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQuantize(cmd, g, f, args[0])
		},
	}
	f.src.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "output", "o", "", "output GGUF path")
	fl.IntVar(&f.bits, "bits", 4, "4 (Q4_K_M) or 8 (Q8_0); --type overrides it")
	fl.StringVar(&f.typ, "type", "", "preset: Q4_K_M, Q8_0, Q5_K_M, IQ4_XS, ... (see above)")
	fl.StringVar(&f.imatrix, "imatrix", "", "importance matrix from llama-imatrix or gemmaconv imatrix (GGUF or legacy .dat)")
	fl.BoolVar(&f.pure, "pure", false, "give every quantizable tensor the preset's base type (no k-quant mixture)")
	fl.StringArrayVar(&f.tensorTypes, "tensor-type", nil, "REGEX=TYPE: tensors whose name matches get TYPE (first match wins; repeatable)")
	fl.StringVar(&f.outputType, "output-tensor-type", "", "type of output.weight (and of token_embd.weight when tied)")
	fl.StringVar(&f.embdType, "token-embedding-type", "", "type of token_embd.weight")
	fl.BoolVar(&f.leaveOutput, "leave-output-tensor", false, "do not quantize output.weight")
	fl.IntVar(&f.threads, "threads", 0, "worker threads (0: all cores); the output does not depend on it")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print each tensor's type and the output size; write nothing")
	fl.BoolVar(&f.allowRequantize, "allow-requantize", false, "allow converting tensors that are already quantized (loses quality)")
	fl.StringVar(&f.report, "report", "", "write a JSON table of every tensor's type, size and RMSE against the source")
	fl.BoolVar(&f.noSourceHash, "no-source-hash", false, "do not record the source files' sha256 (saves one read of the source)")
	return cmd
}

// planOptions validates the flags and turns them into plan options; every
// error is a usage error.
func (f *quantizeFlags) planOptions() (quantize.PlanOptions, error) {
	var po quantize.PlanOptions
	if f.threads < 0 {
		return po, fmt.Errorf("--threads %d: want 0 (all cores) or a positive count", f.threads)
	}
	// --bits is checked even when --type (which wins) is given, so a
	// mistaken --bits 3 is never silently ignored.
	switch f.bits {
	case 4:
		po.FileType = quantize.FileQ4_K_M
	case 8:
		po.FileType = quantize.FileQ8_0
	default:
		return po, fmt.Errorf("--bits %d: want 4 (Q4_K_M) or 8 (Q8_0); for other sizes give a preset with --type (Q3_K_M, Q5_K_M, Q6_K, ...)", f.bits)
	}
	if f.typ != "" {
		ft, err := quantize.ParsePreset(f.typ)
		if err != nil {
			return po, fmt.Errorf("--type %w", err)
		}
		po.FileType = ft
	}
	if f.out == "" && !f.dryRun {
		return po, errors.New("quantize: -o OUT.gguf is required (or --dry-run)")
	}
	po.Pure, po.LeaveOutput, po.AllowRequantize = f.pure, f.leaveOutput, f.allowRequantize
	for _, tt := range f.tensorTypes {
		o, err := quantize.ParseTensorTypeOverride(tt)
		if err != nil {
			return po, fmt.Errorf("--tensor-type: %w", err)
		}
		po.Overrides = append(po.Overrides, o)
	}
	for _, x := range []struct {
		flag, val string
		dst       **ir.DType
	}{{"--output-tensor-type", f.outputType, &po.OutputType}, {"--token-embedding-type", f.embdType, &po.TokenEmbeddingType}} {
		if x.val == "" {
			continue
		}
		t, err := ir.ParseDType(x.val)
		if err != nil {
			return po, fmt.Errorf("%s: %w", x.flag, err)
		}
		*x.dst = &t
	}
	return po, nil
}

func runQuantize(cmd *cobra.Command, g *globalFlags, f *quantizeFlags, srcPath string) error {
	po, err := f.planOptions()
	if err != nil {
		return &exitError{2, err}
	}
	if f.out != "" && !f.dryRun {
		if a, err1 := os.Stat(srcPath); err1 == nil {
			if b, err2 := os.Stat(f.out); err2 == nil && os.SameFile(a, b) {
				return &exitError{2, fmt.Errorf("quantize: input and output are the same file: %s", f.out)}
			}
		}
	}
	m, err := f.src.open(srcPath)
	if err != nil {
		return err
	}
	defer m.Close()
	opts := quantize.Options{Plan: po, Threads: f.threads, Version: version, NoSourceHash: f.noSourceHash, DryRun: f.dryRun}
	if f.imatrix != "" {
		im, err := gguf.ReadImatrix(f.imatrix)
		if err != nil {
			return &exitError{2, err}
		}
		opts.Imatrix = &quantize.Imatrix{Path: f.imatrix, Weights: im.Weights(), Datasets: im.Datasets, Entries: len(im.Entries), Chunks: im.ChunkCount}
	}
	res, err := quantize.Prepare(m, opts)
	if err != nil {
		// An input that cannot be quantized as asked is a usage error.
		var imErr *quantize.ImatrixError
		if errors.Is(err, quantize.ErrRequantize) || errors.As(err, &imErr) {
			return &exitError{2, err}
		}
		return err
	}
	stderr := cmd.ErrOrStderr()
	if f.dryRun {
		printPlan(cmd.OutOrStdout(), res.Plans, res.FileType)
		return nil
	}
	if n := len(res.ImatrixMissing); n > 0 && !g.quiet {
		fmt.Fprintf(stderr, "imatrix has no weights for %d quantized tensor(s), quantized unweighted: %s\n", n, strings.Join(res.ImatrixMissing, ", "))
	}
	progress, finish := newProgress(g, "quantize")
	err = gguf.Write(f.out, res.Model, gguf.WriteOptions{Progress: progress})
	finish()
	if err != nil {
		return err
	}
	if !g.quiet {
		tot := quantize.Totals(res.Plans)
		fmt.Fprintf(stderr, "wrote %s (%s, %d tensors, %.2f MiB, %.2f bits per weight)\n", f.out, res.FileType, tot.Tensors, float64(tot.Bytes)/(1<<20), tot.BitsPerWeight(tot.Bytes))
		if tot.Fallbacks > 0 {
			fmt.Fprintf(stderr, "%d tensor(s) needed a fallback type: their rows are not a multiple of the preset's block size\n", tot.Fallbacks)
		}
	}
	if f.report != "" {
		return writeReport(f, srcPath, res)
	}
	return nil
}

// writeReport reads the written file back and writes --report's JSON.
func writeReport(f *quantizeFlags, srcPath string, res *quantize.Result) error {
	art, err := ir.Open(f.out, ir.OpenOptions{})
	if err != nil {
		return err
	}
	defer art.Close()
	rep, err := verify.CompareQuantized(art, res.Source, res.Plans, verify.TensorOptions{Workers: f.threads})
	if err != nil {
		return err
	}
	rep.Source, rep.Output, rep.Preset, rep.Options = srcPath, f.out, res.FileType.String(), res.Options
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(f.report, append(data, '\n'), 0o644)
}

// printPlan prints the --dry-run table and totals, as llama-quantize
// --dry-run reports sizes.
func printPlan(w io.Writer, plans []quantize.TensorPlan, ft quantize.FileType) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSHAPE\tFROM\tTO\tMIB\tNOTE")
	for _, p := range plans {
		dims := make([]string, len(p.Shape))
		for i, d := range p.Shape {
			dims[i] = fmt.Sprint(d)
		}
		var note []string
		if p.Override {
			note = append(note, "--tensor-type")
		}
		if p.Fallback {
			note = append(note, fmt.Sprintf("fallback from %s: %d columns", p.Wanted, p.Shape[len(p.Shape)-1]))
		}
		fmt.Fprintf(tw, "%s\t[%s]\t%s\t%s\t%.3f\t%s\n", p.Name, strings.Join(dims, " "), p.From, p.To, float64(p.Bytes())/(1<<20), strings.Join(note, "; "))
	}
	tw.Flush()
	tot := quantize.Totals(plans)
	fmt.Fprintf(w, "\npreset %s: %d tensors\nsource size = %.2f MiB (%.2f BPW)\nquant size  = %.2f MiB (%.2f BPW)\n",
		ft, tot.Tensors, float64(tot.SourceBytes)/(1<<20), tot.BitsPerWeight(tot.SourceBytes), float64(tot.Bytes)/(1<<20), tot.BitsPerWeight(tot.Bytes))
	if tot.Fallbacks > 0 {
		fmt.Fprintf(w, "%d tensor(s) required fallback quantization\n", tot.Fallbacks)
	}
}

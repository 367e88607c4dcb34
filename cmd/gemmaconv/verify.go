package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/verify"
)

func newVerifyCmd(g *globalFlags) *cobra.Command {
	var (
		src        sourceFlags
		source     string
		goldens    string
		text       string
		ctx        int
		chunks     int
		asJSON     bool
		report     string
		tol        = verify.DefaultTolerances
		minCosine  float64
		maxRelRMSE float64
	)
	cmd := &cobra.Command{
		Use:   "verify ARTIFACT [--source SRC] [--goldens DIR] [--text FILE]",
		Short: "Check a converted or quantized model against its source and reference outputs",
		Long: "With --source: the architecture and config, tensor set and shapes and the tokenizer must\n" +
			"equal the source's, and every tensor must be within its type's error allowance (plain\n" +
			"float types: rounding; quantized types: cosine and relative RMSE floors). With --goldens:\n" +
			"the logits of every golden prompt are compared (max |Δ|, ‖Δ‖/‖ref‖, top-1, KLD). With\n" +
			"--text (needs --source): KL divergence, same-top rate and perplexity against the source.\n" +
			"Exit status 1 when a check fails, 2 on usage or input errors. See docs/verify.md.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if source == "" && goldens == "" {
				return &exitError{2, errors.New("verify: give --source SRC and/or --goldens DIR")}
			}
			if text != "" && source == "" {
				return &exitError{2, errors.New("verify: --text needs --source (the KLD is measured against it)")}
			}
			if text != "" && ctx < 4 {
				return &exitError{2, fmt.Errorf("verify: --ctx %d: want at least 4", ctx)}
			}
			opts := verify.Options{Tolerances: tol, Ctx: ctx, Chunks: chunks, TextName: text,
				Tensors: verify.TensorOptions{MinCosine: minCosine, MaxRelRMSE: maxRelRMSE}}
			if goldens != "" {
				gl, err := runtime.ReadGoldens(goldens)
				if err != nil {
					return &exitError{2, err}
				}
				opts.Goldens, opts.GoldensDir = gl, goldens
			}
			if text != "" {
				body, err := readTextFile(text)
				if err != nil {
					return err
				}
				if body == "" {
					return &exitError{2, fmt.Errorf("verify: %s is empty", text)}
				}
				opts.Text = body
			}
			art, err := src.open(args[0])
			if err != nil {
				return inputError(err)
			}
			defer art.Close()
			var sm *ir.Model
			if source != "" {
				if sm, err = src.open(source); err != nil {
					return inputError(err)
				}
				defer sm.Close()
			}
			progress, finish := newProgress(g, "verify weights")
			opts.Tensors.Progress = progress
			kldProgress, kldFinish := newChunkProgress(g, "verify kld")
			opts.KLDProgress = kldProgress
			rep, err := verify.Run(art, sm, opts)
			finish()
			kldFinish()
			if err != nil {
				return inputError(err)
			}
			if report != "" {
				js, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(report, append(js, '\n'), 0o644); err != nil {
					return &exitError{2, err}
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				rep.WriteSummary(out)
			}
			if err := rep.Err(); err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	src.register(cmd)
	f := cmd.Flags()
	f.StringVar(&source, "source", "", "the model ARTIFACT was made from")
	f.StringVar(&goldens, "goldens", "", "goldens directory (goldens.json + logits) to compare logits with")
	f.StringVar(&text, "text", "", "UTF-8 text for the KLD/perplexity check against --source")
	f.IntVar(&ctx, "ctx", 512, "KLD chunk length in tokens")
	f.IntVar(&chunks, "chunks", 0, "most KLD chunks; 0 = every whole chunk")
	f.BoolVar(&asJSON, "json", false, "print the JSON report instead of the summary")
	f.StringVar(&report, "report", "", "also write the JSON report to this file")
	f.Float64Var(&tol.MaxRel, "max-rel", tol.MaxRel, "goldens: largest ‖Δlogits‖/‖ref‖ per prompt (0 = no limit)")
	f.Float64Var(&tol.MaxAbs, "max-abs", tol.MaxAbs, "goldens: largest |Δlogit| per prompt (0 = no limit)")
	f.Float64Var(&tol.MinTop1, "min-top1", tol.MinTop1, "least top-1 agreement per golden prompt and same-top rate on --text (0 = no limit)")
	f.Float64Var(&tol.MaxKLD, "max-kld", tol.MaxKLD, "largest mean KLD per golden prompt and on --text, nats (0 = no limit)")
	f.Float64Var(&minCosine, "min-cosine", 0, "cosine floor for every quantized tensor (default: per type, see docs/verify.md)")
	f.Float64Var(&maxRelRMSE, "max-rel-rmse", 0, "relative RMSE limit for every quantized tensor (default: per type)")
	return cmd
}

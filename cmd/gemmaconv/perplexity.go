package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/verify"
)

// perplexityReport is what perplexity --json prints.
type perplexityReport struct {
	Model  string `json:"model"`
	Text   string `json:"text"`
	Tokens int    `json:"tokens"`
	Ctx    int    `json:"ctx"`
	Chunks int    `json:"chunks"`
	Scored int    `json:"scored_tokens"`
	// PPL is the model's perplexity; NLLMean ln(PPL).
	PPL       verify.Num `json:"ppl"`
	PPLError  verify.Num `json:"ppl_error"`
	NLLMean   verify.Num `json:"nll_mean"`
	NLLStderr verify.Num `json:"nll_stderr,omitempty"`
	Seconds   verify.Num `json:"seconds"`
	// TokensPerSecond counts every token run through a model (chunks ×
	// (ctx−1), twice with --kl-base) per wall-clock second.
	TokensPerSecond verify.Num `json:"tokens_per_second"`
	// KLBase and KLD are present with --kl-base.
	KLBase string           `json:"kl_base,omitempty"`
	KLD    *verify.KLDStats `json:"kld,omitempty"`
}

func newPerplexityCmd(g *globalFlags) *cobra.Command {
	var (
		src    sourceFlags
		text   string
		ctx    int
		chunks int
		asJSON bool
		klBase string
	)
	cmd := &cobra.Command{
		Use:   "perplexity MODEL --text FILE [--ctx N] [--chunks N] [--kl-base BASE_MODEL]",
		Short: "Measure perplexity (llama.cpp's method) and, with --kl-base, KL divergence against a base model",
		Long: "Tokenizes the whole text with BOS prepended, splits it into chunks of --ctx tokens, runs each\n" +
			"chunk from an empty cache with its first token replaced by BOS and scores the second half,\n" +
			"as llama-perplexity does, with the float32 reference runtime. With --kl-base the base model\n" +
			"runs on the same chunks and the KL-divergence statistics of llama-perplexity\n" +
			"--kl-divergence are printed (both models use the same --config/--tokenizer/--arch).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if text == "" {
				return &exitError{2, errors.New("perplexity: --text FILE is required")}
			}
			if ctx < 4 {
				return &exitError{2, fmt.Errorf("perplexity: --ctx %d: want at least 4", ctx)}
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
			if c := md.Config.ContextLength; c > 0 && ctx > c && !g.quiet {
				fmt.Fprintf(cmd.ErrOrStderr(), "perplexity: warning: --ctx %d exceeds the model's context length %d\n", ctx, c)
			}
			tokens := verify.PromptIDs(enc, body)
			opts := md.DefaultPerplexityOptions()
			progress, finish := newChunkProgress(g, "perplexity")
			opts.Progress = progress
			rep := perplexityReport{Model: args[0], Text: text, Tokens: len(tokens)}
			start := time.Now()
			if klBase != "" {
				bm, base, _, err := openRuntime(&src, klBase)
				if err != nil {
					finish()
					return err
				}
				defer bm.Close()
				r, err := runtime.KLDivergence(md, base, tokens, ctx, chunks, opts)
				finish()
				if err != nil {
					return &exitError{2, err}
				}
				st := verify.NewKLDStats(r)
				rep.KLBase, rep.KLD = klBase, &st
				rep.Ctx, rep.Chunks, rep.Scored = r.Ctx, r.Chunks, r.Count
				rep.PPL, rep.PPLError, rep.NLLMean = verify.Num(r.PPL), verify.Num(r.PPLError), verify.Num(math.Log(r.PPL))
			} else {
				r, err := runtime.Perplexity(md, tokens, ctx, chunks, opts)
				finish()
				if err != nil {
					return &exitError{2, err}
				}
				rep.Ctx, rep.Chunks, rep.Scored = r.Ctx, r.Chunks, r.Count
				rep.PPL, rep.PPLError = verify.Num(r.PPL), verify.Num(r.PPLError)
				rep.NLLMean, rep.NLLStderr = verify.Num(r.NLLMean), verify.Num(r.NLLStderr)
			}
			secs := time.Since(start).Seconds()
			evaluated := rep.Chunks * (rep.Ctx - 1)
			if rep.KLD != nil {
				evaluated *= 2
			}
			rep.Seconds = verify.Num(secs)
			rep.TokensPerSecond = verify.Num(float64(evaluated) / math.Max(secs, 1e-9))
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				return enc.Encode(rep)
			}
			printPerplexity(out, &rep)
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVar(&text, "text", "", "UTF-8 text file to evaluate")
	cmd.Flags().IntVar(&ctx, "ctx", 512, "chunk length in tokens (llama-perplexity's -c)")
	cmd.Flags().IntVar(&chunks, "chunks", 0, "most chunks to evaluate; 0 = every whole chunk")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (its ppl field is the perplexity)")
	cmd.Flags().StringVar(&klBase, "kl-base", "", "base model to measure KL divergence against")
	return cmd
}

func printPerplexity(w io.Writer, r *perplexityReport) {
	fmt.Fprintf(w, "%s on %s: %d tokens, ctx %d, %d chunks, %d scored\n", r.Model, r.Text, r.Tokens, r.Ctx, r.Chunks, r.Scored)
	fmt.Fprintf(w, "PPL = %.4f +/- %.5f\n", float64(r.PPL), float64(r.PPLError))
	if k := r.KLD; k != nil {
		fmt.Fprintf(w, "base %s\n", r.KLBase)
		fmt.Fprintf(w, "Mean PPL(base)  : %10.6f ± %10.6f\n", float64(k.BasePPL), float64(k.BasePPLError))
		fmt.Fprintf(w, "PPL ratio       : %10.6f ± %10.6f\n", float64(k.PPLRatio), float64(k.PPLRatioError))
		fmt.Fprintf(w, "Mean    KLD     : %10.6f ± %10.6f\n", float64(k.KLDMean), float64(k.KLDMeanError))
		fmt.Fprintf(w, "Median  KLD     : %10.6f\n", float64(k.KLDMedian))
		fmt.Fprintf(w, "99.0%%   KLD     : %10.6f\n", float64(k.KLD99))
		fmt.Fprintf(w, "Maximum KLD     : %10.6f\n", float64(k.KLDMax))
		fmt.Fprintf(w, "Same top p      : %10.4f%% ± %.4f%%\n", 100*float64(k.SameTop), 100*float64(k.SameTopError))
		fmt.Fprintf(w, "RMS Δp          : %10.4f%%\n", 100*float64(k.DeltaPRMS))
	}
	fmt.Fprintf(w, "%.2f s, %.0f tokens/s\n", float64(r.Seconds), float64(r.TokensPerSecond))
}

package verify

import (
	"fmt"
	"io"
	"strings"
)

// maxSummaryFailures bounds the failures the summary lists per check; the
// JSON report has them all.
const maxSummaryFailures = 10

// WriteSummary prints the report for people: one line per check with its
// key figures, the failures under the check that produced them, and a
// final PASS or FAIL line.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "artifact: %s (%s, %s)\n", r.Artifact.Path, r.Artifact.Format, typeCounts(r.Artifact.Types))
	if r.Source != nil {
		fmt.Fprintf(w, "source:   %s (%s, %s)\n", r.Source.Path, r.Source.Format, typeCounts(r.Source.Types))
	}
	status := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	failures := func(check string) {
		n := 0
		for _, f := range r.Failures {
			if f.Check != check {
				continue
			}
			if n == maxSummaryFailures {
				fmt.Fprintf(w, "       ... (see the JSON report for the rest)\n")
				break
			}
			n++
			if f.Subject != "" {
				fmt.Fprintf(w, "       %s: %s\n", f.Subject, f.Message)
			} else {
				fmt.Fprintf(w, "       %s\n", f.Message)
			}
		}
	}
	if c := r.Config; c != nil {
		fmt.Fprintf(w, "%s config     %s; norm offset %g (artifact) / %g (source)\n", status(c.Passed), c.Family, c.ArtifactNormOffset, c.SourceNormOffset)
		failures("config")
	}
	if c := r.TensorSet; c != nil {
		fmt.Fprintf(w, "%s tensors    %d in the artifact, %d in the source\n", status(c.Passed), c.Tensors, c.SourceTensors)
		failures("tensor_set")
	}
	if c := r.Tokenizer; c != nil {
		fmt.Fprintf(w, "%s tokenizer  %d pieces (source %d)", status(c.Passed), c.Pieces, c.SourcePieces)
		if len(c.Notes) > 0 {
			fmt.Fprintf(w, "; %s", strings.Join(c.Notes, "; "))
		}
		fmt.Fprintln(w)
		failures("tokenizer")
	}
	if c := r.Integrity; c != nil {
		fmt.Fprintf(w, "%s integrity  the format's own checksums\n", status(c.Passed))
		failures("integrity")
	}
	if c := r.Weights; c != nil {
		fmt.Fprintf(w, "%s weights    %d tensors compared, %d failed; worst cosine %.7f (%s), worst rel. RMSE %.3g (%s)",
			status(c.Passed), c.Compared, c.Failed, float64(c.WorstCosine), c.WorstCosineTensor, float64(c.WorstRelRMSE), c.WorstRelTensor)
		if c.WorstBoundTensor != "" {
			fmt.Fprintf(w, ", worst rounding error %.3g× its bound (%s)", float64(c.WorstBoundRatio), c.WorstBoundTensor)
		}
		fmt.Fprintln(w)
		failures("weights")
	}
	if c := r.Goldens; c != nil {
		fmt.Fprintf(w, "%s goldens    %d prompts (%s): max rel %.3g, max |Δ| %.3g, min top-1 %.4f, max mean KLD %.3g\n",
			status(c.Passed), len(c.Prompts), c.Dir, float64(c.MaxRel), float64(c.MaxAbs), float64(c.MinTop1), float64(c.MaxKLD))
		for _, p := range c.Prompts {
			fmt.Fprintf(w, "       prompt %d (%d tokens): rel %.3g, max |Δ| %.3g, top-1 %.4f, KLD mean %.3g max %.3g\n",
				p.Index, p.Tokens, float64(p.Rel), float64(p.MaxAbs), float64(p.Top1), float64(p.KLDMean), float64(p.KLDMax))
		}
		failures("goldens")
	}
	if c := r.KLD; c != nil {
		fmt.Fprintf(w, "%s kld        %s: %d tokens, ctx %d × %d chunks (%d scored); mean KLD %.4g ± %.2g, median %.3g, p99 %.3g, max %.3g; same top %.4f; RMS Δp %.3g; PPL %.4f vs %.4f (ratio %.5f); %.0f tokens/s\n",
			status(c.Passed), c.Text, c.Tokens, c.Ctx, c.Chunks, c.Count, float64(c.KLDMean), float64(c.KLDMeanError), float64(c.KLDMedian),
			float64(c.KLD99), float64(c.KLDMax), float64(c.SameTop), float64(c.DeltaPRMS), float64(c.PPL), float64(c.BasePPL), float64(c.PPLRatio), float64(c.TokensPerSecond))
		failures("kld")
	}
	if r.Passed {
		fmt.Fprintln(w, "PASS")
	} else {
		fmt.Fprintf(w, "FAIL: %d failures\n", len(r.Failures))
	}
}

// Err returns nil when the report passed, else an error naming the first
// failure in full and the next few other failing subjects (tensors,
// prompts) or checks, for a command's exit message.
func (r *Report) Err() error {
	if r.Passed {
		return nil
	}
	msg := r.Failures[0].String()
	// Name the next few other failing subjects (or checks), each once.
	seen := map[string]bool{strings.TrimSpace(r.Failures[0].Check + " " + r.Failures[0].Subject): true}
	var also []string
	more := 0
	for _, f := range r.Failures[1:] {
		label := strings.TrimSpace(f.Check + " " + f.Subject)
		switch {
		case seen[label]:
		case len(also) < 3:
			also = append(also, label)
		default:
			more++
		}
		seen[label] = true
	}
	if len(also) > 0 {
		msg += "; also " + strings.Join(also, ", ")
	}
	if more > 0 {
		msg += fmt.Sprintf(" and %d more", more)
	}
	return fmt.Errorf("verification failed (%d failures): %s", len(r.Failures), msg)
}

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/tokenizer"
	"github.com/gemmaconv/gemmaconv/verify"
)

func newRunCmd(g *globalFlags) *cobra.Command {
	var (
		src    sourceFlags
		prompt string
		n      int
	)
	cmd := &cobra.Command{
		Use:   "run MODEL --prompt TEXT [-n N]",
		Short: "Generate greedily from a prompt with the reference runtime and print the continuation",
		Long: "Runs BOS + the prompt's tokens through the float32 reference runtime and appends the most\n" +
			"likely token until EOS or end-of-turn is produced or N tokens were generated, printing the\n" +
			"generated text as it goes.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("prompt") {
				return &exitError{2, errors.New("run: --prompt TEXT is required")}
			}
			if n < 0 {
				return &exitError{2, fmt.Errorf("run: -n %d: want 0 or more", n)}
			}
			m, md, enc, err := openRuntime(&src, args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			ids := verify.PromptIDs(enc, prompt)
			if len(ids) == 0 {
				return &exitError{2, errors.New("run: the prompt is empty and the tokenizer has no BOS")}
			}
			if c := md.Config.ContextLength; c > 0 && len(ids)+n > c {
				n = max(0, c-len(ids))
				if !g.quiet {
					fmt.Fprintf(cmd.ErrOrStderr(), "run: generating at most %d tokens (context length %d)\n", n, c)
				}
			}
			tk := enc.Tokenizer()
			var stop []int32
			for _, id := range []int32{tk.EOS, tk.EOT} {
				if id >= 0 {
					stop = append(stop, id)
				}
			}
			out := cmd.OutOrStdout()
			var gen []int32
			printed := ""
			flush := func(final bool) {
				s := enc.Decode(gen)
				if !final {
					// A byte-fallback character may still be incomplete.
					s = strings.TrimRight(s, "\uFFFD")
				}
				if strings.HasPrefix(s, printed) {
					fmt.Fprint(out, s[len(printed):])
					printed = s
				}
			}
			start := time.Now()
			_, err = runtime.Generate(md, ids, n, stop, func(id int32) {
				gen = append(gen, id)
				flush(false)
			})
			flush(true)
			fmt.Fprintln(out)
			if err != nil {
				return err
			}
			if !g.quiet {
				el := time.Since(start).Seconds()
				fmt.Fprintf(cmd.ErrOrStderr(), "%d prompt tokens, %d generated in %.2f s (%.1f tokens/s)\n",
					len(ids), len(gen), el, float64(len(gen))/max(el, 1e-9))
			}
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVar(&prompt, "prompt", "", "prompt text (BOS is prepended)")
	cmd.Flags().IntVarP(&n, "n", "n", 64, "most tokens to generate")
	return cmd
}

// openRuntime opens path and prepares it for inference: the IR model
// (close it when done), the runtime model and the tokenizer.
func openRuntime(src *sourceFlags, path string) (*ir.Model, *runtime.Model, *tokenizer.Encoder, error) {
	m, err := src.open(path)
	if err != nil {
		return nil, nil, nil, inputError(err)
	}
	enc, err := modelEncoder(m)
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	md, err := runtime.Load(m, runtime.Options{})
	if err != nil {
		m.Close()
		return nil, nil, nil, &exitError{2, err}
	}
	return m, md, enc, nil
}

// modelEncoder builds the encoder of m's tokenizer.
func modelEncoder(m *ir.Model) (*tokenizer.Encoder, error) {
	if m.Tokenizer == nil {
		return nil, &exitError{2, fmt.Errorf("%s carries no tokenizer; give --tokenizer tokenizer.model", m.Provenance.Path)}
	}
	enc, err := tokenizer.New(m.Tokenizer)
	if err != nil {
		return nil, &exitError{2, fmt.Errorf("%s: %w", m.Provenance.Path, err)}
	}
	return enc, nil
}

// inputError marks err as a usage or input error (exit status 2) unless
// it already carries a status.
func inputError(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{2, err}
}

// readTextFile reads a UTF-8 text file for perplexity or verification.
func readTextFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &exitError{2, err}
	}
	return string(b), nil
}

// newChunkProgress returns a chunk-count progress callback drawing a bar
// on stderr, or nil when quiet or stderr is not a terminal.
func newChunkProgress(g *globalFlags, desc string) (update func(done, total int), finish func()) {
	if g.quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	update = func(done, total int) {
		if bar == nil {
			bar = progressbar.Default(int64(total), desc)
		}
		_ = bar.Set(done)
	}
	finish = func() {
		if bar != nil {
			_ = bar.Finish()
		}
	}
	return update, finish
}

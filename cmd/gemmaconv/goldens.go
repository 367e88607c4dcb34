package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/runtime"
	"github.com/gemmaconv/gemmaconv/verify"
)

func newGoldensCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "goldens",
		Short: "Make reference logits (goldens) for later verification",
	}
	cmd.AddCommand(newGoldensMakeCmd(g))
	return cmd
}

func newGoldensMakeCmd(g *globalFlags) *cobra.Command {
	var (
		src     sourceFlags
		prompts string
		out     string
		name    string
	)
	cmd := &cobra.Command{
		Use:   "make MODEL --prompts FILE -o DIR",
		Short: "Write every position's logits for each prompt (goldens.json + logits.f32)",
		Long: "Each non-empty line of FILE is one prompt; its ids are BOS followed by the tokenizer's ids.\n" +
			"The float32 reference runtime's logits of every position are written to DIR in the\n" +
			"fixtures' interchange format, for `gemmaconv verify ARTIFACT --goldens DIR`.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if prompts == "" || out == "" {
				return &exitError{2, errors.New("goldens make: --prompts FILE and -o DIR are required")}
			}
			text, err := readTextFile(prompts)
			if err != nil {
				return err
			}
			lines := promptLines(text)
			if len(lines) == 0 {
				return &exitError{2, fmt.Errorf("goldens make: %s holds no prompts", prompts)}
			}
			m, md, enc, err := openRuntime(&src, args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			if name == "" {
				name = filepath.Base(filepath.Clean(args[0]))
			}
			ref := fmt.Sprintf("gemmaconv %s reference runtime (float32 compute) on %s (%s)", version, m.Provenance.Path, m.Provenance.Format)
			gl, err := verify.MakeGoldens(md, enc, lines, name, ref)
			if err != nil {
				return err
			}
			if err := runtime.WriteGoldens(out, gl); err != nil {
				return err
			}
			if !g.quiet {
				tokens := 0
				for _, p := range gl.Prompts {
					tokens += len(p.TokenIDs)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %d prompts, %d positions of %d logits\n", out, len(gl.Prompts), tokens, gl.Vocab)
			}
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVar(&prompts, "prompts", "", "text file with one prompt per line")
	cmd.Flags().StringVarP(&out, "output", "o", "", "output directory")
	cmd.Flags().StringVar(&name, "name", "", `the goldens' "model" field (default: MODEL's base name)`)
	return cmd
}

// promptLines splits a prompts file into its non-empty lines, without
// line terminators (\n or \r\n).
func promptLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSuffix(l, "\r")
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

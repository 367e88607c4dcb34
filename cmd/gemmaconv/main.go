// Command gemmaconv converts, quantizes and verifies Gemma checkpoints.
// It is a thin layer over the library packages: it parses flags, calls
// them and prints.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	// Every format reader registers itself with ir.Open.
	_ "github.com/gemmaconv/gemmaconv/formats/gguf"
	_ "github.com/gemmaconv/gemmaconv/formats/jax"
	_ "github.com/gemmaconv/gemmaconv/formats/pytorch"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
)

// version is stamped into provenance metadata; release builds override it
// with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// exitError carries a specific exit status (1: a check failed; 2: usage or
// input error) up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type globalFlags struct {
	quiet bool
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "gemmaconv",
		Short:         "Convert, quantize and verify Gemma checkpoints",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "no progress output")
	root.AddCommand(newConvertCmd(g), newInspectCmd(g), newQuantizeCmd(g),
		newTokenizeCmd(g), newRunCmd(g), newPerplexityCmd(g), newGoldensCmd(g), newVerifyCmd(g),
		newImatrixCmd(g), newBundleCmd(g))
	return root
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "gemmaconv:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(2)
}

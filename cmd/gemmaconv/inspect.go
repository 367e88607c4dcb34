package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/ir"
)

func newInspectCmd(g *globalFlags) *cobra.Command {
	var (
		src    sourceFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "inspect FILE_OR_DIR",
		Short: "Show a model's format, config, tensors and tokenizer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := src.open(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			s := ir.Describe(m)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			printSummary(cmd.OutOrStdout(), s)
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printSummary(w io.Writer, s ir.Summary) {
	c := s.Config
	fmt.Fprintf(w, "format:       %s\npath:         %s\n", s.Format, s.Path)
	fmt.Fprintf(w, "architecture: %s\n", c.Family)
	fmt.Fprintf(w, "layers %d, hidden %d, ffn %d, heads %d (kv %d), head_dim %d, vocab %d, context %d\n",
		c.NumLayers, c.Hidden, c.FFN, c.NumHeads, c.NumKVHeads, c.HeadDim, c.Vocab, c.ContextLength)
	fmt.Fprintf(w, "rms eps %g, rope base %g (local %g, scale %g), query scalar %g\n",
		c.RMSNormEps, c.RopeBase, c.RopeBaseLocal, c.RopeScale, c.QueryPreAttnScalar)
	local := 0
	for _, sl := range c.Sliding {
		if sl {
			local++
		}
	}
	fmt.Fprintf(w, "sliding window %d on %d of %d layers; softcaps attn %g final %g; qk-norm %v; post-norms %v; tied embeddings %v; norm offset %g\n",
		c.SlidingWindow, local, c.NumLayers, c.AttnSoftcap, c.FinalSoftcap, c.QKNorm, c.PostNorms, c.TiedEmbeddings, c.NormOffset)
	if t := s.Tokenizer; t != nil {
		fmt.Fprintf(w, "tokenizer:    %s, %d tokens %v, bos %d eos %d unk %d pad %d eot %d, add_bos %v add_eos %v\n",
			t.Model, t.Size, t.TypeCounts, t.BOS, t.EOS, t.UNK, t.PAD, t.EOT, t.AddBOS, t.AddEOS)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "note:         %s\n", n)
	}
	if len(s.Metadata) > 0 {
		keys := make([]string, 0, len(s.Metadata))
		for k := range s.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "meta:         %s = %s\n", k, s.Metadata[k])
		}
	}
	fmt.Fprintf(w, "tensors:      %d, %d parameters, %d bytes %v\n\n", len(s.Tensors), s.Params, s.Bytes, s.TypeCounts)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tSHAPE\tBYTES")
	for _, t := range s.Tensors {
		dims := make([]string, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = fmt.Sprint(d)
		}
		fmt.Fprintf(tw, "%s\t%s\t[%s]\t%d\n", t.Name, t.DType, strings.Join(dims, " "), t.Bytes)
	}
	tw.Flush()
}

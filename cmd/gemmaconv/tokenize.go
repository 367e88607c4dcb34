package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

func newTokenizeCmd(g *globalFlags) *cobra.Command {
	var (
		src    sourceFlags
		text   string
		asJSON bool
		bos    bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize SRC --text TEXT",
		Short: "Print the token ids and pieces of a text",
		Long: "SRC is a model directory or file (any format gemmaconv reads) or a SentencePiece\n" +
			"tokenizer.model. The ids are SentencePiece's EncodeAsIds: no BOS unless --bos.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("text") {
				return &exitError{2, errors.New("tokenize: --text TEXT is required")}
			}
			tk, err := loadTokenizer(&src, args[0])
			if err != nil {
				return err
			}
			enc, err := tokenizer.New(tk)
			if err != nil {
				return &exitError{2, fmt.Errorf("%s: %w", args[0], err)}
			}
			ids := []int32{}
			if bos {
				if tk.BOS < 0 {
					return &exitError{2, fmt.Errorf("tokenize: %s has no BOS token", args[0])}
				}
				ids = append(ids, tk.BOS)
			}
			ids = append(ids, enc.Encode(text)...)
			pieces := make([]string, len(ids))
			for i, id := range ids {
				pieces[i] = enc.Piece(id)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetEscapeHTML(false)
				return enc.Encode(struct {
					IDs    []int32  `json:"ids"`
					Pieces []string `json:"pieces"`
				}{ids, pieces})
			}
			fmt.Fprintf(out, "%d tokens\n", len(ids))
			for i, id := range ids {
				fmt.Fprintf(out, "%8d  %q\n", id, pieces[i])
			}
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVar(&text, "text", "", "text to tokenize")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"ids": [...], "pieces": [...]}`)
	cmd.Flags().BoolVar(&bos, "bos", false, "prepend the BOS token")
	return cmd
}

// loadTokenizer reads the tokenizer of path: a SentencePiece model file
// when the name ends in .model or ir.Open cannot read it, else the
// tokenizer the model carries.
func loadTokenizer(src *sourceFlags, path string) (*ir.Tokenizer, error) {
	if strings.HasSuffix(path, ".model") {
		tk, err := tokenizer.LoadSentencePiece(path)
		if err != nil {
			return nil, &exitError{2, err}
		}
		return tk, nil
	}
	m, err := src.open(path)
	if err != nil {
		tk, spErr := tokenizer.LoadSentencePiece(path)
		if spErr != nil {
			return nil, inputError(fmt.Errorf("%w (nor is it a SentencePiece model: %v)", err, spErr))
		}
		return tk, nil
	}
	defer m.Close()
	if m.Tokenizer == nil {
		return nil, &exitError{2, fmt.Errorf("%s carries no tokenizer; give --tokenizer tokenizer.model", path)}
	}
	return m.Tokenizer, nil
}

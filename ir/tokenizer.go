package ir

// TokenType is a vocabulary entry's kind, numbered as SentencePiece's
// ModelProto.SentencePiece.Type and GGUF's tokenizer.ggml.token_type.
type TokenType int32

// Token types.
const (
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3
	TokenUserDefined TokenType = 4
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6
)

// Tokenizer is a SentencePiece vocabulary with the settings needed to
// encode and decode exactly as SentencePiece does for Gemma. Pieces,
// Scores and Types are parallel, indexed by token id.
type Tokenizer struct {
	// Model is the GGUF tokenizer model name; "llama" is SentencePiece.
	Model  string
	Pieces []string
	Scores []float32
	Types  []TokenType
	// Special token ids; -1 when the vocabulary has none.
	BOS, EOS, UNK, PAD, EOT int32
	AddBOS, AddEOS          bool
	// AddSpacePrefix is SentencePiece's add_dummy_prefix (false for Gemma).
	AddSpacePrefix bool
	// ByteFallback: unknown characters encode as <0xNN> byte pieces.
	ByteFallback bool
	// SplitDigits: every digit is its own piece boundary.
	SplitDigits bool
	// RemoveExtraWhitespaces and the normalizer name are SentencePiece's
	// normalizer_spec; Gemma uses "identity" with no whitespace folding.
	RemoveExtraWhitespaces bool
	Normalizer             string
}

// TokenID returns the id of an exact piece, or -1.
func (t *Tokenizer) TokenID(piece string) int32 {
	for i, p := range t.Pieces {
		if p == piece {
			return int32(i)
		}
	}
	return -1
}

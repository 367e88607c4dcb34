// Package tokenizer reads SentencePiece models (tokenizer.model) into the
// IR's ir.Tokenizer and encodes and decodes text exactly as Google's
// SentencePiece does for Gemma's BPE tokenizers.
package tokenizer

import (
	"fmt"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Field numbers of sentencepiece_model.proto (google/sentencepiece,
// src/sentencepiece_model.proto). The wire format is decoded by hand so the
// package needs no generated code.
const (
	fModelPieces      = 1
	fModelTrainer     = 2
	fModelNormalizer  = 3
	fPiecePiece       = 1
	fPieceScore       = 2
	fPieceType        = 3
	fTrainerModelType = 3
	fTrainerVocabSize = 4
	fTrainerWSSuffix  = 24 // treat_whitespace_as_suffix
	fTrainerSplitDig  = 25
	fTrainerByteFB    = 35
	fTrainerUnkID     = 40
	fTrainerBosID     = 41
	fTrainerEosID     = 42
	fTrainerPadID     = 43
	fNormName         = 1
	fNormCharsmap     = 2
	fNormDummyPrefix  = 3
	fNormRemoveWS     = 4
	fNormEscapeWS     = 5
)

// SentencePiece model types (TrainerSpec.ModelType).
const (
	modelUnigram = 1
	modelBPE     = 2
	modelWord    = 3
	modelChar    = 4
)

// ModelUnigram is the ir.Tokenizer Model name ParseSentencePiece gives a
// SentencePiece UNIGRAM model: GGUF calls SentencePiece's unigram tokenizer
// "t5" (llama.cpp's UGM), while "llama" means the score-merging BPE that
// Gemma uses. The Encoder supports only "llama".
const ModelUnigram = "t5"

// maxPieces bounds the vocabulary a model file may declare. Gemma 3 has
// 262,144 pieces; anything far beyond that is corruption, not a tokenizer.
const maxPieces = 1 << 24

// maxModelFile bounds the tokenizer.model LoadSentencePiece reads into
// memory (Gemma's is about 4 MiB).
const maxModelFile = 1 << 30

// LoadSentencePiece reads a SentencePiece tokenizer.model file.
func LoadSentencePiece(path string) (*ir.Tokenizer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if st.Size() > maxModelFile {
		return nil, fmt.Errorf("tokenizer: %s: %d bytes is too large for a SentencePiece model", path, st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := ParseSentencePiece(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseSentencePiece decodes a serialized SentencePiece ModelProto. The
// result has Model "llama" for BPE models (ModelUnigram for UNIGRAM ones),
// AddBOS true and AddEOS false, which readers that know better (a Hugging
// Face tokenizer_config.json) override. Malformed input returns an error
// naming the byte offset; it never panics.
func ParseSentencePiece(data []byte) (*ir.Tokenizer, error) {
	p := parser{data: data}
	t := &ir.Tokenizer{
		Model: "llama",
		// TrainerSpec defaults for absent fields.
		UNK: 0, BOS: 1, EOS: 2, PAD: -1, EOT: -1,
		AddBOS:                 true,
		AddSpacePrefix:         true,
		RemoveExtraWhitespaces: true,
	}
	modelType := int64(modelUnigram)
	escapeWS, wsSuffix := true, false
	haveTrainer := false
	err := p.fields(0, len(data), "ModelProto", func(num protowire.Number, typ protowire.Type, start, valOff int, val []byte, v uint64) error {
		switch num {
		case fModelPieces:
			if typ != protowire.BytesType {
				return p.wireErr(start, "ModelProto.pieces", typ)
			}
			if len(t.Pieces) >= maxPieces {
				return fmt.Errorf("tokenizer: sentencepiece: byte %d: more than %d pieces", start, maxPieces)
			}
			return p.piece(t, valOff, val)
		case fModelTrainer:
			if typ != protowire.BytesType {
				return p.wireErr(start, "ModelProto.trainer_spec", typ)
			}
			haveTrainer = true
			return p.fields(valOff, valOff+len(val), "TrainerSpec", func(num protowire.Number, typ protowire.Type, start, _ int, _ []byte, v uint64) error {
				var dst *int32
				switch num {
				case fTrainerModelType:
					if typ != protowire.VarintType {
						return p.wireErr(start, "TrainerSpec.model_type", typ)
					}
					modelType = int64(v)
				case fTrainerSplitDig, fTrainerByteFB, fTrainerWSSuffix:
					if typ != protowire.VarintType {
						return p.wireErr(start, fmt.Sprintf("TrainerSpec field %d", num), typ)
					}
					b := protowire.DecodeBool(v)
					switch num {
					case fTrainerSplitDig:
						t.SplitDigits = b
					case fTrainerByteFB:
						t.ByteFallback = b
					default:
						wsSuffix = b
					}
				case fTrainerUnkID:
					dst = &t.UNK
				case fTrainerBosID:
					dst = &t.BOS
				case fTrainerEosID:
					dst = &t.EOS
				case fTrainerPadID:
					dst = &t.PAD
				}
				if dst != nil {
					if typ != protowire.VarintType {
						return p.wireErr(start, fmt.Sprintf("TrainerSpec field %d", num), typ)
					}
					// int32 fields are sign-extended to 64 bits on the wire.
					*dst = int32(int64(v))
				}
				return nil
			})
		case fModelNormalizer:
			if typ != protowire.BytesType {
				return p.wireErr(start, "ModelProto.normalizer_spec", typ)
			}
			return p.fields(valOff, valOff+len(val), "NormalizerSpec", func(num protowire.Number, typ protowire.Type, start, valOff int, val []byte, v uint64) error {
				switch num {
				case fNormName:
					if typ != protowire.BytesType {
						return p.wireErr(start, "NormalizerSpec.name", typ)
					}
					t.Normalizer = string(val)
				case fNormCharsmap:
					if typ != protowire.BytesType {
						return p.wireErr(start, "NormalizerSpec.precompiled_charsmap", typ)
					}
				case fNormDummyPrefix, fNormRemoveWS, fNormEscapeWS:
					if typ != protowire.VarintType {
						return p.wireErr(start, fmt.Sprintf("NormalizerSpec field %d", num), typ)
					}
					b := protowire.DecodeBool(v)
					switch num {
					case fNormDummyPrefix:
						t.AddSpacePrefix = b
					case fNormRemoveWS:
						t.RemoveExtraWhitespaces = b
					default:
						escapeWS = b
					}
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(t.Pieces) == 0 {
		return nil, fmt.Errorf("tokenizer: sentencepiece: no pieces in %d bytes (not a SentencePiece model?)", len(data))
	}
	if !haveTrainer {
		return nil, fmt.Errorf("tokenizer: sentencepiece: no trainer_spec in %d bytes (not a SentencePiece model?)", len(data))
	}
	switch modelType {
	case modelBPE:
	case modelUnigram:
		t.Model = ModelUnigram
	case modelWord, modelChar:
		return nil, fmt.Errorf("tokenizer: sentencepiece: model type %d (WORD/CHAR) is not supported; only BPE and UNIGRAM are", modelType)
	default:
		return nil, fmt.Errorf("tokenizer: sentencepiece: unknown model type %d", modelType)
	}
	if !escapeWS {
		return nil, fmt.Errorf("tokenizer: sentencepiece: escape_whitespaces=false is not supported")
	}
	if wsSuffix {
		return nil, fmt.Errorf("tokenizer: sentencepiece: treat_whitespace_as_suffix=true is not supported")
	}
	n := int32(len(t.Pieces))
	for _, s := range []struct {
		name string
		id   int32
	}{{"unk_id", t.UNK}, {"bos_id", t.BOS}, {"eos_id", t.EOS}, {"pad_id", t.PAD}} {
		if s.id < -1 || s.id >= n {
			return nil, fmt.Errorf("tokenizer: sentencepiece: trainer_spec.%s %d is outside the %d pieces", s.name, s.id, n)
		}
	}
	t.EOT = t.TokenID("<end_of_turn>")
	return t, nil
}

// parser walks protobuf messages inside data, keeping absolute offsets
// for error messages.
type parser struct {
	data []byte
}

type fieldFunc func(num protowire.Number, typ protowire.Type, start, valOff int, val []byte, v uint64) error

// fields decodes the message in data[from:to], calling fn for every field
// with its tag offset, the offset of its value, and its bytes (BytesType)
// or its varint/fixed value.
func (p *parser) fields(from, to int, msg string, fn fieldFunc) error {
	off := from
	for off < to {
		start := off
		num, typ, n := protowire.ConsumeTag(p.data[off:to])
		if n < 0 {
			return p.protoErr(start, msg+" tag", n)
		}
		if num > protowire.MaxValidNumber || num < protowire.MinValidNumber {
			return fmt.Errorf("tokenizer: sentencepiece: byte %d: %s: invalid field number %d", start, msg, num)
		}
		off += n
		var val []byte
		var v uint64
		valOff := off
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(p.data[off:to])
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(p.data[off:to])
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(p.data[off:to])
		case protowire.BytesType:
			val, n = protowire.ConsumeBytes(p.data[off:to])
			if n >= 0 {
				valOff = off + n - len(val)
			}
		default:
			// Groups are not used by sentencepiece_model.proto; skip them
			// generically so unknown extensions still parse.
			n = protowire.ConsumeFieldValue(num, typ, p.data[off:to])
		}
		if n < 0 {
			return p.protoErr(off, fmt.Sprintf("%s field %d", msg, num), n)
		}
		off += n
		if err := fn(num, typ, start, valOff, val, v); err != nil {
			return err
		}
	}
	return nil
}

// piece decodes one ModelProto.SentencePiece whose value starts at off.
func (p *parser) piece(t *ir.Tokenizer, off int, val []byte) error {
	var (
		piece    string
		score    float32
		typ      = ir.TokenNormal
		hasPiece bool
	)
	err := p.fields(off, off+len(val), "SentencePiece", func(num protowire.Number, wt protowire.Type, start, _ int, val []byte, v uint64) error {
		switch num {
		case fPiecePiece:
			if wt != protowire.BytesType {
				return p.wireErr(start, "SentencePiece.piece", wt)
			}
			piece, hasPiece = string(val), true
		case fPieceScore:
			if wt != protowire.Fixed32Type {
				return p.wireErr(start, "SentencePiece.score", wt)
			}
			score = math.Float32frombits(uint32(v))
		case fPieceType:
			if wt != protowire.VarintType {
				return p.wireErr(start, "SentencePiece.type", wt)
			}
			if v < uint64(ir.TokenNormal) || v > uint64(ir.TokenByte) {
				return fmt.Errorf("tokenizer: sentencepiece: byte %d: piece %d has unknown type %d", start, len(t.Pieces), int64(v))
			}
			typ = ir.TokenType(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !hasPiece || piece == "" {
		return fmt.Errorf("tokenizer: sentencepiece: byte %d: piece %d is empty", off, len(t.Pieces))
	}
	t.Pieces = append(t.Pieces, piece)
	t.Scores = append(t.Scores, score)
	t.Types = append(t.Types, typ)
	return nil
}

func (p *parser) protoErr(off int, what string, n int) error {
	return fmt.Errorf("tokenizer: sentencepiece: byte %d: %s: %w", off, what, protowire.ParseError(n))
}

func (p *parser) wireErr(off int, field string, typ protowire.Type) error {
	return fmt.Errorf("tokenizer: sentencepiece: byte %d: %s has wire type %d", off, field, typ)
}

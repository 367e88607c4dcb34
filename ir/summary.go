package ir

import "fmt"

// Summary is a model's description for people and tools (gemmaconv
// inspect): no tensor data, only what the reader found.
type Summary struct {
	Format     string            `json:"format"`
	Path       string            `json:"path"`
	Files      []string          `json:"files,omitempty"`
	Notes      []string          `json:"notes,omitempty"`
	Config     Config            `json:"config"`
	Tokenizer  *TokenizerSummary `json:"tokenizer,omitempty"`
	Tensors    []TensorSummary   `json:"tensors"`
	Params     int64             `json:"parameters"`
	Bytes      int64             `json:"tensor_bytes"`
	TypeCounts map[string]int    `json:"tensor_types"`
	Metadata   map[string]string `json:"metadata,omitempty"`
}

// TensorSummary is one row of the tensor table.
type TensorSummary struct {
	Name  string  `json:"name"`
	DType string  `json:"type"`
	Shape []int64 `json:"shape"`
	Bytes int64   `json:"bytes"`
}

// TokenizerSummary describes the vocabulary without listing it.
type TokenizerSummary struct {
	Model          string         `json:"model"`
	Size           int            `json:"size"`
	TypeCounts     map[string]int `json:"token_types"`
	BOS            int32          `json:"bos_id"`
	EOS            int32          `json:"eos_id"`
	UNK            int32          `json:"unk_id"`
	PAD            int32          `json:"pad_id"`
	EOT            int32          `json:"eot_id"`
	AddBOS         bool           `json:"add_bos"`
	AddEOS         bool           `json:"add_eos"`
	AddSpacePrefix bool           `json:"add_space_prefix"`
	ByteFallback   bool           `json:"byte_fallback"`
}

var tokenTypeNames = map[TokenType]string{TokenNormal: "normal", TokenUnknown: "unknown", TokenControl: "control",
	TokenUserDefined: "user_defined", TokenUnused: "unused", TokenByte: "byte"}

// Describe summarizes m. Array-valued metadata is shown by length only.
func Describe(m *Model) Summary {
	s := Summary{Format: m.Provenance.Format, Path: m.Provenance.Path, Files: m.Provenance.Files,
		Notes: m.Provenance.Notes, Config: m.Config, TypeCounts: map[string]int{}}
	for _, t := range m.Tensors {
		s.Tensors = append(s.Tensors, TensorSummary{t.Name, t.DType.String(), t.Shape, t.Size()})
		s.Params += t.NumElements()
		s.Bytes += t.Size()
		s.TypeCounts[t.DType.String()]++
	}
	if tk := m.Tokenizer; tk != nil {
		ts := &TokenizerSummary{Model: tk.Model, Size: len(tk.Pieces), TypeCounts: map[string]int{},
			BOS: tk.BOS, EOS: tk.EOS, UNK: tk.UNK, PAD: tk.PAD, EOT: tk.EOT, AddBOS: tk.AddBOS, AddEOS: tk.AddEOS,
			AddSpacePrefix: tk.AddSpacePrefix, ByteFallback: tk.ByteFallback}
		for _, ty := range tk.Types {
			name, ok := tokenTypeNames[ty]
			if !ok {
				name = fmt.Sprintf("type%d", ty)
			}
			ts.TypeCounts[name]++
		}
		s.Tokenizer = ts
	}
	if len(m.Extra) > 0 {
		s.Metadata = map[string]string{}
		for _, kv := range m.Extra {
			s.Metadata[kv.Key] = formatValue(kv.Value)
		}
	}
	return s
}

func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []string:
		return fmt.Sprintf("[%d strings]", len(x))
	case []float32, []int32, []uint32, []int64, []uint64, []float64, []bool, []uint8, []int8, []uint16, []int16:
		return fmt.Sprintf("[array of %d]", lenOf(x))
	}
	return fmt.Sprint(v)
}

func lenOf(v any) int {
	switch x := v.(type) {
	case []float32:
		return len(x)
	case []int32:
		return len(x)
	case []uint32:
		return len(x)
	case []int64:
		return len(x)
	case []uint64:
		return len(x)
	case []float64:
		return len(x)
	case []bool:
		return len(x)
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	}
	return 0
}

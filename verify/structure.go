package verify

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"

	"github.com/gemmaconv/gemmaconv/ir"
)

// maxListed bounds the differences a check lists; the count is complete.
const maxListed = 20

// ConfigCheck compares the hyperparameters of artifact and source.
type ConfigCheck struct {
	Passed bool `json:"passed"`
	// Family is the artifact's architecture (GGUF general.architecture).
	Family string `json:"family"`
	// Differences lists "field: artifact X, source Y" for every ir.Config
	// field that differs (NormOffset is a storage convention, not
	// compared; float64 fields are compared at float32 precision, which
	// is what GGUF stores; SlidingWindow only when a layer slides).
	Differences []string `json:"differences,omitempty"`
	// NormOffset of artifact and source, for the record.
	ArtifactNormOffset float32 `json:"artifact_norm_offset"`
	SourceNormOffset   float32 `json:"source_norm_offset"`
}

// CheckConfig compares two configurations field by field.
func CheckConfig(artifact, source ir.Config) *ConfigCheck {
	c := &ConfigCheck{Family: string(artifact.Family), ArtifactNormOffset: artifact.NormOffset, SourceNormOffset: source.NormOffset}
	va, vs := reflect.ValueOf(artifact), reflect.ValueOf(source)
	slides := anyTrue(artifact.Sliding) || anyTrue(source.Sliding)
	for i := 0; i < va.NumField(); i++ {
		name := va.Type().Field(i).Name
		if name == "NormOffset" || (name == "SlidingWindow" && !slides) {
			continue
		}
		x, y := va.Field(i).Interface(), vs.Field(i).Interface()
		equal := reflect.DeepEqual(x, y)
		if fx, ok := x.(float64); ok {
			equal = float32(fx) == float32(y.(float64))
		}
		if !equal {
			c.Differences = append(c.Differences, fmt.Sprintf("%s: artifact %v, source %v", name, x, y))
		}
	}
	c.Passed = len(c.Differences) == 0
	return c
}

func anyTrue(b []bool) bool {
	for _, v := range b {
		if v {
			return true
		}
	}
	return false
}

// TensorSetCheck compares the tensor names and shapes.
type TensorSetCheck struct {
	Passed bool `json:"passed"`
	// Tensors is the artifact's tensor count, SourceTensors the source's.
	Tensors       int `json:"tensors"`
	SourceTensors int `json:"source_tensors"`
	// Missing are source tensors the artifact lacks; Extra artifact
	// tensors the source lacks; ShapeMismatches "name: artifact [..],
	// source [..]".
	Missing         []string `json:"missing,omitempty"`
	Extra           []string `json:"extra,omitempty"`
	ShapeMismatches []string `json:"shape_mismatches,omitempty"`
	// Types counts the artifact's tensors per type ("Q4_K": 120).
	Types map[string]int `json:"types"`
}

// CheckTensorSet compares the two models' tensor names and shapes.
func CheckTensorSet(artifact, source *ir.Model) *TensorSetCheck {
	c := &TensorSetCheck{Tensors: len(artifact.Tensors), SourceTensors: len(source.Tensors), Types: map[string]int{}}
	for _, t := range artifact.Tensors {
		c.Types[t.DType.String()]++
		s := source.Tensor(t.Name)
		switch {
		case s == nil:
			c.Extra = append(c.Extra, t.Name)
		case !sameShape(t.Shape, s.Shape):
			c.ShapeMismatches = append(c.ShapeMismatches, fmt.Sprintf("%s: artifact %v, source %v", t.Name, t.Shape, s.Shape))
		}
	}
	for _, t := range source.Tensors {
		if artifact.Tensor(t.Name) == nil {
			c.Missing = append(c.Missing, t.Name)
		}
	}
	c.Passed = len(c.Missing) == 0 && len(c.Extra) == 0 && len(c.ShapeMismatches) == 0
	return c
}

// TokenizerCheck compares two vocabularies and their settings.
type TokenizerCheck struct {
	Passed bool `json:"passed"`
	// Pieces and SourcePieces are the vocabulary sizes.
	Pieces       int `json:"pieces"`
	SourcePieces int `json:"source_pieces"`
	// Differences lists the first differences found (at most 20);
	// DifferenceCount counts them all.
	Differences     []string `json:"differences,omitempty"`
	DifferenceCount int      `json:"difference_count"`
	// Notes are accepted, documented differences: user-defined pieces
	// typed NORMAL (llama.cpp's GGUF vocabularies do that) and [PADn]
	// entries that pad the vocabulary to the embedding rows.
	Notes []string `json:"notes,omitempty"`
}

func (c *TokenizerCheck) differ(format string, args ...any) {
	c.DifferenceCount++
	if len(c.Differences) < maxListed {
		c.Differences = append(c.Differences, fmt.Sprintf(format, args...))
	}
}

// CheckTokenizer compares the artifact's vocabulary with the source's:
// every piece, score (bit for bit) and type, the special ids (BOS, EOS,
// UNK, PAD, EOT) and the encoding settings. Two differences are accepted
// with a note, because GGUF files written as llama.cpp writes them have
// them: a USER_DEFINED piece typed NORMAL (or the reverse), and trailing
// "[PADn]" UNUSED entries on one side (padding up to the embedding rows).
func CheckTokenizer(artifact, source *ir.Tokenizer) *TokenizerCheck {
	c := &TokenizerCheck{}
	switch {
	case artifact == nil && source == nil:
		c.Passed = true
		c.Notes = append(c.Notes, "neither model carries a tokenizer")
		return c
	case artifact == nil:
		c.differ("the artifact has no tokenizer")
		return c
	case source == nil:
		c.SourcePieces = 0
		c.Pieces = len(artifact.Pieces)
		c.Passed = true
		c.Notes = append(c.Notes, "the source carries no tokenizer; nothing to compare")
		return c
	}
	c.Pieces, c.SourcePieces = len(artifact.Pieces), len(source.Pieces)
	if artifact.Model != source.Model {
		c.differ("tokenizer model: artifact %q, source %q", artifact.Model, source.Model)
	}
	n := min(len(artifact.Pieces), len(source.Pieces))
	retyped := 0
	for i := 0; i < n; i++ {
		pa, ps := artifact.Pieces[i], source.Pieces[i]
		if pa != ps {
			c.differ("piece %d: artifact %q, source %q", i, pa, ps)
		}
		if i < len(artifact.Scores) && i < len(source.Scores) &&
			math.Float32bits(artifact.Scores[i]) != math.Float32bits(source.Scores[i]) {
			c.differ("score of piece %d %q: artifact %v, source %v", i, ps, artifact.Scores[i], source.Scores[i])
		}
		if i < len(artifact.Types) && i < len(source.Types) {
			ta, ts := artifact.Types[i], source.Types[i]
			switch {
			case ta == ts:
			case (ta == ir.TokenNormal && ts == ir.TokenUserDefined) || (ta == ir.TokenUserDefined && ts == ir.TokenNormal):
				retyped++
			default:
				c.differ("type of piece %d %q: artifact %d, source %d", i, ps, ta, ts)
			}
		}
	}
	if retyped > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%d user-defined pieces are typed NORMAL on one side, as llama.cpp's GGUF vocabularies type them (text containing them may tokenize differently)", retyped))
	}
	longer, which := artifact, "artifact"
	if len(source.Pieces) > len(artifact.Pieces) {
		longer, which = source, "source"
	}
	if pad := len(longer.Pieces) - n; pad > 0 {
		ok := true
		for i := n; i < len(longer.Pieces); i++ {
			if longer.Pieces[i] != "[PAD"+strconv.Itoa(i)+"]" || i >= len(longer.Types) || longer.Types[i] != ir.TokenUnused {
				c.differ("the %s has %d more pieces than the other, starting with %d %q (not [PADn] padding)", which, pad, i, longer.Pieces[i])
				ok = false
				break
			}
		}
		if ok {
			c.Notes = append(c.Notes, fmt.Sprintf("the %s has %d [PADn] padding entries after the other's %d pieces", which, pad, n))
		}
	}
	for _, f := range []struct {
		name string
		a, s int32
	}{{"BOS", artifact.BOS, source.BOS}, {"EOS", artifact.EOS, source.EOS}, {"UNK", artifact.UNK, source.UNK},
		{"PAD", artifact.PAD, source.PAD}, {"EOT", artifact.EOT, source.EOT}} {
		if f.a != f.s {
			c.differ("%s id: artifact %d, source %d", f.name, f.a, f.s)
		}
	}
	for _, f := range []struct {
		name string
		a, s any
	}{{"add_bos", artifact.AddBOS, source.AddBOS}, {"add_eos", artifact.AddEOS, source.AddEOS},
		{"add_space_prefix", artifact.AddSpacePrefix, source.AddSpacePrefix}, {"byte_fallback", artifact.ByteFallback, source.ByteFallback},
		{"split_digits", artifact.SplitDigits, source.SplitDigits}, {"remove_extra_whitespaces", artifact.RemoveExtraWhitespaces, source.RemoveExtraWhitespaces},
		{"normalizer", normName(artifact.Normalizer), normName(source.Normalizer)}} {
		if f.a != f.s {
			c.differ("%s: artifact %v, source %v", f.name, f.a, f.s)
		}
	}
	c.Passed = c.DifferenceCount == 0
	return c
}

// normName treats an empty normalizer name as SentencePiece's identity.
func normName(s string) string {
	if s == "" {
		return "identity"
	}
	return s
}

// typeCounts renders a type histogram deterministically ("BF16×12 F32×9").
func typeCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s×%d", k, m[k])
	}
	return s
}

package runtime

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// GoldensFile is the name of the goldens metadata file in a goldens directory.
const GoldensFile = "goldens.json"

// DefaultLogitsFile is the logits file name WriteGoldens uses when
// Goldens.LogitsFile is empty.
const DefaultLogitsFile = "logits.f32"

// Goldens is the reference-output interchange format of the fixtures
// (goldens/goldens.json plus a raw logits file): prompts with their token
// ids and the full-vocabulary logits of every position, and optionally a
// perplexity figure. The JSON field names are those of the fixtures.
type Goldens struct {
	// Model names the model the outputs belong to.
	Model string `json:"model"`
	// Reference says which implementation produced the outputs and how.
	Reference string `json:"reference"`
	// LogitsFile is the logits file's name inside the goldens directory.
	LogitsFile string `json:"logits_file"`
	// Layout describes the logits file's layout for people.
	Layout string `json:"layout"`
	// Vocab is the number of logits per position. It is not stored in
	// goldens.json: ReadGoldens derives it from the logits file's size.
	Vocab int `json:"-"`
	// Prompts are the evaluated prompts in the logits file's order.
	Prompts []GoldenPrompt `json:"prompts"`
	// Perplexity is a perplexity measurement, if any.
	Perplexity *GoldenPerplexity `json:"perplexity,omitempty"`
	// PerplexityDequantized holds perplexities of dequantized variants
	// (free-form: kept as it is in the file).
	PerplexityDequantized json.RawMessage `json:"perplexity_dequantized,omitempty"`
}

// GoldenPrompt is one prompt of a goldens file.
type GoldenPrompt struct {
	// Text is the prompt before tokenization.
	Text string `json:"text"`
	// TokenIDs are the model's input ids (BOS first).
	TokenIDs []int32 `json:"token_ids"`
	// Argmax is the highest-logit token of each position (optional).
	Argmax []int32 `json:"argmax,omitempty"`
	// Logits are the outputs of every position, [len(TokenIDs), Vocab]
	// row-major; they live in the logits file, not in the JSON.
	Logits []float32 `json:"-"`
}

// GoldenPerplexity is a perplexity measurement with llama.cpp's method.
type GoldenPerplexity struct {
	// Ctx is the chunk length in tokens.
	Ctx int `json:"ctx"`
	// Chunks is the number of chunks evaluated.
	Chunks int `json:"chunks"`
	// ScoredTokens is the number of predictions scored.
	ScoredTokens int `json:"scored_tokens"`
	// NLLMean is the mean negative log-likelihood (natural log).
	NLLMean float64 `json:"nll_mean"`
	// PPL is exp(NLLMean).
	PPL float64 `json:"ppl"`
	// Method describes the procedure.
	Method string `json:"method,omitempty"`
	// Text names the evaluated text.
	Text string `json:"text,omitempty"`
}

// ReadGoldens reads dir/goldens.json and the logits file it names. The
// logits file must hold exactly one float32 row of some vocabulary size V
// per prompt token; V is derived from its size and returned in Vocab.
func ReadGoldens(dir string) (*Goldens, error) {
	path := filepath.Join(dir, GoldensFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("goldens: %w", err)
	}
	var g Goldens
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("goldens: %s: %w", path, err)
	}
	name, err := logitsName(g.LogitsFile)
	if err != nil {
		return nil, fmt.Errorf("goldens: %s: %w", path, err)
	}
	var tokens int64
	for i, p := range g.Prompts {
		if len(p.TokenIDs) == 0 {
			return nil, fmt.Errorf("goldens: %s: prompt %d has no tokens", path, i)
		}
		if len(p.Argmax) != 0 && len(p.Argmax) != len(p.TokenIDs) {
			return nil, fmt.Errorf("goldens: %s: prompt %d has %d argmax entries for %d tokens", path, i, len(p.Argmax), len(p.TokenIDs))
		}
		tokens += int64(len(p.TokenIDs))
	}
	lpath := filepath.Join(dir, name)
	f, err := os.Open(lpath)
	if err != nil {
		return nil, fmt.Errorf("goldens: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("goldens: %w", err)
	}
	size := st.Size()
	if tokens == 0 {
		if size != 0 {
			return nil, fmt.Errorf("goldens: %s: %d bytes of logits for no prompts", lpath, size)
		}
		return &g, nil
	}
	if size%(4*tokens) != 0 || size == 0 {
		return nil, fmt.Errorf("goldens: %s: %d bytes is not %d rows of float32 logits (%s lists %d tokens)", lpath, size, tokens, GoldensFile, tokens)
	}
	vocab := size / (4 * tokens)
	if vocab > 1<<24 {
		return nil, fmt.Errorf("goldens: %s: implied vocabulary of %d is too large", lpath, vocab)
	}
	g.Vocab = int(vocab)
	raw := make([]byte, size)
	if n, err := io.ReadFull(f, raw); err != nil {
		return nil, fmt.Errorf("goldens: %s: read %d of %d bytes at offset %d: %w", lpath, n, size, n, err)
	}
	off := 0
	for i := range g.Prompts {
		p := &g.Prompts[i]
		p.Logits = make([]float32, len(p.TokenIDs)*g.Vocab)
		for j := range p.Logits {
			p.Logits[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[off:]))
			off += 4
		}
	}
	return &g, nil
}

// WriteGoldens writes g to dir/goldens.json and its prompts' logits to the
// logits file (g.LogitsFile, DefaultLogitsFile when empty), creating dir.
// Every prompt must carry len(TokenIDs)*g.Vocab logits.
func WriteGoldens(dir string, g *Goldens) error {
	if g.LogitsFile == "" {
		g.LogitsFile = DefaultLogitsFile
	}
	name, err := logitsName(g.LogitsFile)
	if err != nil {
		return fmt.Errorf("goldens: %w", err)
	}
	if g.Layout == "" {
		g.Layout = "for each prompt in order: [n_tokens, vocab] little-endian float32, row-major"
	}
	var raw []byte
	for i, p := range g.Prompts {
		if g.Vocab <= 0 || len(p.Logits) != len(p.TokenIDs)*g.Vocab {
			return fmt.Errorf("goldens: prompt %d has %d logits for %d tokens of vocabulary %d", i, len(p.Logits), len(p.TokenIDs), g.Vocab)
		}
		for _, v := range p.Logits {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
		}
	}
	js, err := json.MarshalIndent(g, "", " ")
	if err != nil {
		return fmt.Errorf("goldens: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("goldens: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
		return fmt.Errorf("goldens: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, GoldensFile), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("goldens: %w", err)
	}
	return nil
}

// logitsName checks that the logits file name stays inside the goldens
// directory.
func logitsName(name string) (string, error) {
	if name == "" {
		return DefaultLogitsFile, nil
	}
	if name != filepath.Base(name) || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return "", fmt.Errorf("logits_file %q must be a plain file name", name)
	}
	return name, nil
}

// CompareLogits returns the relative error ‖got−want‖/‖want‖ (2-norms over
// all values, in float64) and the largest absolute difference.
func CompareLogits(got, want []float32) (rel, maxAbs float64, err error) {
	if len(got) != len(want) {
		return 0, 0, fmt.Errorf("compare: %d logits against %d", len(got), len(want))
	}
	var d2, w2 float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		d2 += d * d
		w2 += float64(want[i]) * float64(want[i])
		if a := math.Abs(d); a > maxAbs || math.IsNaN(d) {
			maxAbs = a
		}
	}
	if w2 == 0 {
		return math.Sqrt(d2), maxAbs, nil
	}
	return math.Sqrt(d2 / w2), maxAbs, nil
}

// LogitsDiff compares one prompt's logits with reference logits.
type LogitsDiff struct {
	// Tokens is the prompt length.
	Tokens int
	// RelErr is ‖got−want‖/‖want‖ over all the prompt's logits; MaxAbs the
	// largest |got−want|.
	RelErr, MaxAbs float64
	// ArgmaxAgree is the fraction of positions whose highest logit is the
	// reference's (the goldens' argmax when given, else that of its logits).
	ArgmaxAgree float64
}

// CompareGoldens runs every prompt of g through md from an empty state and
// compares the logits of every position with the goldens'.
func CompareGoldens(md *Model, g *Goldens) ([]LogitsDiff, error) {
	if g.Vocab != md.Config.Vocab {
		return nil, fmt.Errorf("goldens: logits of %d values per position, the model's vocabulary is %d", g.Vocab, md.Config.Vocab)
	}
	var out []LogitsDiff
	for i, p := range g.Prompts {
		got, err := md.Logits(p.TokenIDs)
		if err != nil {
			return nil, fmt.Errorf("goldens: prompt %d: %w", i, err)
		}
		d := LogitsDiff{Tokens: len(p.TokenIDs)}
		if d.RelErr, d.MaxAbs, err = CompareLogits(got, p.Logits); err != nil {
			return nil, fmt.Errorf("goldens: prompt %d: %w", i, err)
		}
		agree := 0
		for j := range p.TokenIDs {
			want := Argmax(p.Logits[j*g.Vocab : (j+1)*g.Vocab])
			if len(p.Argmax) == len(p.TokenIDs) {
				want = int(p.Argmax[j])
			}
			if Argmax(got[j*g.Vocab:(j+1)*g.Vocab]) == want {
				agree++
			}
		}
		d.ArgmaxAgree = float64(agree) / float64(len(p.TokenIDs))
		out = append(out, d)
	}
	return out, nil
}

package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// FormatName is the name this package registers with ir.RegisterFormat.
const FormatName = "safetensors"

func init() {
	ir.RegisterFormat(ir.Format{Name: FormatName, Detect: Detect, Open: OpenHF})
}

// Hugging Face file names.
const (
	indexFile     = "model.safetensors.index.json"
	singleFile    = "model.safetensors"
	configFile    = "config.json"
	spFile        = "tokenizer.model"
	tokConfigFile = "tokenizer_config.json"
	addedTokens   = "added_tokens.json"
)

// Detect reports whether path is a Hugging Face checkpoint directory (it
// holds config.json and at least one .safetensors file) or a single file
// whose safetensors header parses.
func Detect(path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(path, configFile)); err != nil {
			return false
		}
		shards, _ := filepath.Glob(filepath.Join(path, "*.safetensors"))
		return len(shards) > 0
	}
	f, err := Open(path)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// OpenHF reads a Hugging Face Gemma checkpoint: a directory with
// config.json, model.safetensors (or shards listed in
// model.safetensors.index.json), tokenizer.model and optionally
// tokenizer_config.json; or a single .safetensors file, whose config and
// tokenizer come from opts or sit beside it. Tensor names are mapped to
// GGUF's (see docs/ir.md, "Hugging Face"); tensors keep their stored type
// and the config's NormOffset is 1. Explicit opts.ConfigPath and
// opts.TokenizerPath take precedence over files in the directory.
func OpenHF(path string, opts ir.OpenOptions) (_ *ir.Model, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	dir := path
	if !st.IsDir() {
		dir = filepath.Dir(path)
	}
	m := &ir.Model{Provenance: ir.Provenance{Format: FormatName, Path: path}}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	opened := func(p string) { m.Provenance.Files = append(m.Provenance.Files, p) }

	// Config.
	cfgPath := opts.ConfigPath
	if cfgPath == "" {
		cfgPath = filepath.Join(dir, configFile)
	}
	cfgData, err := os.ReadFile(cfgPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && opts.ConfigPath == "" {
			return nil, fmt.Errorf("safetensors: %s: no %s beside the weights; pass a config path", path, configFile)
		}
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	opened(cfgPath)
	cfg, err := ir.ConfigFromHF(cfgData)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", cfgPath, err)
	}
	if opts.Arch != "" && opts.Arch != cfg.Family {
		return nil, fmt.Errorf("safetensors: %s describes a %s model, but %s was requested", cfgPath, cfg.Family, opts.Arch)
	}
	m.Config = cfg

	// Tokenizer.
	tokPath := opts.TokenizerPath
	if tokPath == "" {
		tokPath = filepath.Join(dir, spFile)
	}
	if _, err := os.Stat(tokPath); err != nil {
		if errors.Is(err, os.ErrNotExist) && opts.TokenizerPath == "" {
			return nil, fmt.Errorf("safetensors: %s: no %s beside the weights; pass a tokenizer path", path, spFile)
		}
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	tok, err := tokenizer.LoadSentencePiece(tokPath)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	opened(tokPath)
	notes, files, err := applyHFTokenizerFiles(tok, filepath.Dir(tokPath), cfgData, cfg.Vocab)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		opened(f)
	}
	m.Provenance.Notes = append(m.Provenance.Notes, notes...)
	m.Tokenizer = tok

	// Weights.
	shards, err := openShards(path, st.IsDir(), m, opened)
	if err != nil {
		return nil, err
	}
	var vision []string
	for _, sf := range shards {
		for _, ti := range sf.Tensors {
			name, skip, err := MapName(ti.Name, cfg)
			if err != nil {
				return nil, fmt.Errorf("safetensors: %s: tensor %s (file offset %d): %w", sf.Path, ti.Name, sf.DataOffset()+ti.Begin, err)
			}
			if skip != "" {
				if skip == skipVision {
					vision = append(vision, ti.Name)
				} else {
					m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("skipped %s: %s", ti.Name, skip))
				}
				continue
			}
			t, err := sf.Tensor(ti.Name)
			if err != nil {
				return nil, err
			}
			t.Name = name
			m.Tensors = append(m.Tensors, t)
		}
	}
	if len(vision) > 0 {
		m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("skipped %d vision tensors (%s ... %s): gemmaconv converts the text decoder only", len(vision), vision[0], vision[len(vision)-1]))
	}
	ir.SortTensors(m.Tensors)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return m, nil
}

// openShards opens the weight files of a checkpoint and registers them
// with m for closing. A directory uses model.safetensors.index.json when
// present, else model.safetensors, else its only .safetensors file. With
// an index every listed shard must exist, every listed tensor must be in
// its shard, and every tensor in a shard must be listed for that shard.
func openShards(path string, isDir bool, m *ir.Model, opened func(string)) ([]*File, error) {
	open := func(p string) (*File, error) {
		f, err := Open(p)
		if err != nil {
			return nil, err
		}
		m.OnClose(f)
		opened(p)
		return f, nil
	}
	if !isDir {
		f, err := open(path)
		if err != nil {
			return nil, err
		}
		return []*File{f}, nil
	}
	idxPath := filepath.Join(path, indexFile)
	data, err := os.ReadFile(idxPath)
	if errors.Is(err, os.ErrNotExist) {
		single := filepath.Join(path, singleFile)
		if _, err := os.Stat(single); err != nil {
			all, _ := filepath.Glob(filepath.Join(path, "*.safetensors"))
			if len(all) != 1 {
				return nil, fmt.Errorf("safetensors: %s: no %s or %s (found %d .safetensors files, which need an index)", path, singleFile, indexFile, len(all))
			}
			single = all[0]
		}
		f, err := open(single)
		if err != nil {
			return nil, err
		}
		return []*File{f}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	opened(idxPath)
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", idxPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("safetensors: %s: weight_map is empty or missing", idxPath)
	}
	byShard := map[string][]string{}
	for name, shard := range idx.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." {
			return nil, fmt.Errorf("safetensors: %s: tensor %s maps to %q, which is not a file name in the checkpoint directory", idxPath, name, shard)
		}
		byShard[shard] = append(byShard[shard], name)
	}
	names := make([]string, 0, len(byShard))
	for s := range byShard {
		names = append(names, s)
	}
	sort.Strings(names)
	var files []*File
	for _, s := range names {
		p := filepath.Join(path, s)
		listed := byShard[s]
		sort.Strings(listed)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("safetensors: %s lists shard %s (for %d tensors, e.g. %s), but it cannot be opened: %w", idxPath, s, len(listed), listed[0], err)
		}
		f, err := open(p)
		if err != nil {
			return nil, err
		}
		for _, name := range listed {
			if _, ok := f.Info(name); !ok {
				return nil, fmt.Errorf("safetensors: %s lists tensor %s in shard %s, but the shard has no such tensor", idxPath, name, p)
			}
		}
		for _, ti := range f.Tensors {
			switch where, ok := idx.WeightMap[ti.Name]; {
			case !ok:
				return nil, fmt.Errorf("safetensors: %s: tensor %s (file offset %d) is not listed in %s", p, ti.Name, f.DataOffset()+ti.Begin, idxPath)
			case where != s:
				return nil, fmt.Errorf("safetensors: %s: tensor %s (file offset %d) is listed in %s for shard %s", p, ti.Name, f.DataOffset()+ti.Begin, idxPath, where)
			}
		}
		files = append(files, f)
	}
	return files, nil
}

// skipVision is MapName's skip reason for vision-tower tensors, which
// OpenHF reports as one note rather than one per tensor.
const skipVision = "vision tensor"

// MapName maps a Hugging Face tensor name to its canonical (GGUF) name for
// a model with config c, with the vocabulary of ir's HF* functions. When
// the tensor is not part of the text model (vision tensors, rotary
// buffers, a tied lm_head) it returns skip, a reason, and no name. Unknown
// names are an error.
func MapName(hf string, c ir.Config) (name, skip string, err error) {
	if ir.IsHFVision(hf) {
		return "", skipVision, nil
	}
	if module, ok := strings.CutSuffix(hf, ".weight"); ok {
		if g, ok := ir.HFGlobalName(module); ok {
			if g == "output" && c.TiedEmbeddings {
				return "", "the config ties embeddings, so the output projection is token_embd", nil
			}
			return g + ".weight", "", nil
		}
	}
	rest, ok := ir.CutHFTextPrefix(hf)
	if !ok {
		return "", "", fmt.Errorf("not a Gemma text-model tensor name")
	}
	layer, ok := strings.CutPrefix(rest, "layers.")
	if !ok {
		return "", "", fmt.Errorf("not a Gemma text-model tensor name")
	}
	num, suffix, ok := strings.Cut(layer, ".")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 0 || strconv.Itoa(n) != num {
		return "", "", fmt.Errorf("malformed layer number in tensor name")
	}
	if n >= c.NumLayers {
		return "", "", fmt.Errorf("layer %d, but the config has %d layers", n, c.NumLayers)
	}
	if suffix == "self_attn.rotary_emb.inv_freq" {
		return "", "a RoPE buffer recomputed from the config, not a weight", nil
	}
	module, ok := strings.CutSuffix(suffix, ".weight")
	if ok {
		var g string
		if g, ok = ir.HFLayerName(module, c.Family); ok {
			return fmt.Sprintf("blk.%d.%s.weight", n, g), "", nil
		}
	}
	return "", "", fmt.Errorf("unknown per-layer tensor %q for a %s model", suffix, c.Family)
}

// HFName is ir.HFName: the Hugging Face name under which transformers
// stores a canonical tensor of a model of family f, for writers of
// Hugging Face checkpoints.
func HFName(canonical string, f ir.Family) (string, error) {
	return ir.HFName(canonical, f)
}

// padScore is the score llama.cpp's convert_hf_to_gguf.py
// (_create_vocab_sentencepiece) gives the "[PAD{id}]" entries that fill
// the vocabulary up to the config's vocab_size.
const padScore = -10000

// addedScore is the score it gives tokens from added_tokens.json and
// tokenizer_config.json's added_tokens_decoder.
const addedScore = -1000

// applyHFTokenizerFiles fits a SentencePiece vocabulary to a Hugging Face
// checkpoint as llama.cpp's convert_hf_to_gguf.py
// (_create_vocab_sentencepiece) does, as far as that keeps the vocabulary
// SentencePiece's (ir.Tokenizer must encode exactly as SentencePiece):
//
//   - ids from len(pieces) up to the config's vocab_size become
//     "[PAD{id}]", score -10000, type UNUSED; pieces at or beyond
//     vocab_size are dropped;
//   - tokens of added_tokens.json and tokenizer_config.json's
//     added_tokens_decoder whose ids lie in that padding range take their
//     place (score -1000; CONTROL when special or special-looking, else
//     USER_DEFINED with U+2581 turned into spaces). Entries for ids that
//     SentencePiece already defines are left as SentencePiece has them
//     (llama.cpp retypes them; see docs/ir.md), with a note if the text
//     disagrees;
//   - add_bos_token / add_eos_token override AddBOS / AddEOS;
//   - special ids named in tokenizer_config.json ("bos_token": "<bos>")
//     or, failing that, config.json's *_token_id override the model's.
//
// It returns provenance notes and the files it read.
func applyHFTokenizerFiles(t *ir.Tokenizer, dir string, cfgData []byte, vocab int) (notes, files []string, err error) {
	spCount := len(t.Pieces)
	if n := len(t.Pieces); n < vocab {
		for i := n; i < vocab; i++ {
			t.Pieces = append(t.Pieces, fmt.Sprintf("[PAD%d]", i))
			t.Scores = append(t.Scores, padScore)
			t.Types = append(t.Types, ir.TokenUnused)
		}
		notes = append(notes, fmt.Sprintf("padded the vocabulary from %d to %d entries with [PAD%d]..[PAD%d] (unused), as llama.cpp does", n, vocab, n, vocab-1))
	} else if n > vocab {
		t.Pieces, t.Scores, t.Types = t.Pieces[:vocab], t.Scores[:vocab], t.Types[:vocab]
		spCount = vocab
		notes = append(notes, fmt.Sprintf("dropped tokenizer pieces %d..%d beyond the config's vocab_size %d, as llama.cpp does", vocab, n-1, vocab))
		for _, id := range []*int32{&t.BOS, &t.EOS, &t.UNK, &t.PAD, &t.EOT} {
			if *id >= int32(vocab) {
				*id = -1
			}
		}
	}
	// add places one added token, from file src.
	add := func(src string, id int64, content string, control bool) {
		switch {
		case id < 0 || id >= int64(vocab):
			notes = append(notes, fmt.Sprintf("%s: ignored token %q with id %d outside the %d-entry vocabulary", src, content, id, vocab))
		case id < int64(spCount):
			if t.Pieces[id] != content {
				notes = append(notes, fmt.Sprintf("%s: kept SentencePiece piece %q for id %d, not %q", src, t.Pieces[id], id, content))
			}
		case control:
			t.Pieces[id], t.Scores[id], t.Types[id] = content, addedScore, ir.TokenControl
		default:
			// llama.cpp pre-normalizes user-defined pieces: ▁ becomes a space.
			t.Pieces[id], t.Scores[id], t.Types[id] = strings.ReplaceAll(content, "\u2581", " "), addedScore, ir.TokenUserDefined
		}
	}

	if p := filepath.Join(dir, addedTokens); fileExists(p) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors: %w", err)
		}
		files = append(files, p)
		var added map[string]int64
		if err := json.Unmarshal(data, &added); err != nil {
			return nil, nil, fmt.Errorf("safetensors: %s: %w", p, err)
		}
		keys := make([]string, 0, len(added))
		for k := range added {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			add(addedTokens, added[k], k, false)
		}
	}

	p := filepath.Join(dir, tokConfigFile)
	var tc map[string]json.RawMessage
	if fileExists(p) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors: %w", err)
		}
		files = append(files, p)
		if err := json.Unmarshal(data, &tc); err != nil {
			return nil, nil, fmt.Errorf("safetensors: %s: %w", p, err)
		}
		if raw, ok := tc["added_tokens_decoder"]; ok {
			var dec map[string]struct {
				Content *string `json:"content"`
				Special bool    `json:"special"`
			}
			if err := json.Unmarshal(raw, &dec); err != nil {
				return nil, nil, fmt.Errorf("safetensors: %s: added_tokens_decoder: %w", p, err)
			}
			ids := make([]int64, 0, len(dec))
			for k := range dec {
				id, err := strconv.ParseInt(k, 10, 64)
				if err != nil || strconv.FormatInt(id, 10) != k {
					return nil, nil, fmt.Errorf("safetensors: %s: added_tokens_decoder key %q is not a token id", p, k)
				}
				ids = append(ids, id)
			}
			sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
			for _, id := range ids {
				e := dec[strconv.FormatInt(id, 10)]
				if e.Content == nil {
					return nil, nil, fmt.Errorf("safetensors: %s: added_tokens_decoder[%d] has no content", p, id)
				}
				add(tokConfigFile, id, *e.Content, e.Special || looksSpecial(*e.Content))
			}
		}
		for _, f := range []struct {
			key string
			dst *bool
		}{{"add_bos_token", &t.AddBOS}, {"add_eos_token", &t.AddEOS}} {
			if raw, ok := tc[f.key]; ok {
				var b bool
				if json.Unmarshal(raw, &b) == nil {
					*f.dst = b
				}
			}
		}
	}

	// Special ids: a token named in tokenizer_config.json ("bos_token":
	// "<bos>" or {"content": "<bos>"}), else config.json's *_token_id.
	var cfg map[string]json.RawMessage
	_ = json.Unmarshal(cfgData, &cfg)
	if tcRaw, ok := cfg["text_config"]; ok {
		var text map[string]json.RawMessage
		if json.Unmarshal(tcRaw, &text) == nil {
			for k, v := range text {
				if _, ok := cfg[k]; !ok {
					cfg[k] = v
				}
			}
		}
	}
	for _, s := range []struct {
		typ string
		dst *int32
	}{{"bos", &t.BOS}, {"eos", &t.EOS}, {"unk", &t.UNK}, {"pad", &t.PAD}} {
		if id := specialFromTokenizerConfig(t, tc[s.typ+"_token"]); id >= 0 {
			*s.dst = id
			continue
		}
		var id int64
		if raw, ok := cfg[s.typ+"_token_id"]; ok && json.Unmarshal(raw, &id) == nil && id >= 0 && id < int64(len(t.Pieces)) {
			*s.dst = int32(id)
		}
	}
	return notes, files, nil
}

// specialFromTokenizerConfig resolves a tokenizer_config.json special
// token entry (a string or an object with "content") to its id, or -1.
func specialFromTokenizerConfig(t *ir.Tokenizer, raw json.RawMessage) int32 {
	if len(raw) == 0 {
		return -1
	}
	var content string
	if json.Unmarshal(raw, &content) != nil {
		var obj struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(raw, &obj) != nil || obj.Content == "" {
			return -1
		}
		content = obj.Content
	}
	return t.TokenID(content)
}

// looksSpecial is llama.cpp's does_token_look_special: added tokens that
// some checkpoints (Gemma among them) fail to mark special but that act as
// control tokens.
func looksSpecial(s string) bool {
	switch s {
	case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
		return true
	}
	return (strings.HasPrefix(s, "<|") && strings.HasSuffix(s, "|>")) ||
		(strings.HasPrefix(s, "<｜") && strings.HasSuffix(s, "｜>")) ||
		(strings.HasPrefix(s, "<unused") && strings.HasSuffix(s, ">"))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

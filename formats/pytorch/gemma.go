// Package pytorch reads PyTorch checkpoints (torch.save files: the zip
// archive format of PyTorch 1.6 and later, and the legacy pickle stream
// before it) with a pickle virtual machine that only builds data, and maps
// Gemma checkpoints into the IR: gemma_pytorch's .ckpt files (fused
// qkv_proj, embedder, optional int8 weights with per-row scalers) and
// Hugging Face pytorch_model.bin files, single or sharded. See
// docs/formats-pytorch.md.
package pytorch

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/tokenizer"
)

// FormatName is the name this package registers with ir.RegisterFormat.
const FormatName = "pytorch"

func init() {
	ir.RegisterFormat(ir.Format{Name: FormatName, Detect: Detect, Open: Open})
}

// File names this reader looks for.
const (
	hfIndex     = "pytorch_model.bin.index.json"
	hfSingle    = "pytorch_model.bin"
	configFile  = "config.json"
	spFile      = "tokenizer.model"
	maxJSONSize = 64 << 20
)

// Detect reports whether path is a torch.save checkpoint (a zip archive
// with a <dir>/data.pkl entry, or a legacy pickle that starts with torch's
// magic number), a pytorch_model.bin.index.json, or a directory holding
// pytorch_model.bin or its index and no safetensors weights (which the
// safetensors reader prefers).
func Detect(path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false
	}
	if st.IsDir() {
		for _, s := range []string{"model.safetensors", "model.safetensors.index.json"} {
			if fileExists(filepath.Join(path, s)) {
				return false
			}
		}
		return fileExists(filepath.Join(path, hfIndex)) || fileExists(filepath.Join(path, hfSingle))
	}
	if strings.HasSuffix(path, ".bin.index.json") {
		return true
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	switch sniff(f, st.Size()) {
	case "legacy":
		return true
	case "zip":
		zr, err := zip.NewReader(f, st.Size())
		if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
			return false
		}
		for _, zf := range zr.File {
			if dir, base, ok := strings.Cut(zf.Name, "/"); ok && dir != "" && base == "data.pkl" {
				return true
			}
		}
	}
	return false
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Open reads a Gemma PyTorch checkpoint: a gemma_pytorch .ckpt, a Hugging
// Face pytorch_model.bin, a sharded set (the index file, a directory, or
// one shard whose index sits beside it). The config comes from
// opts.ConfigPath or a config.json beside the weights; without one it is
// inferred from tensor shapes for the released Gemma sizes (see
// docs/formats-pytorch.md). The tokenizer comes from opts.TokenizerPath or
// a tokenizer.model beside the weights.
func Open(path string, opts ir.OpenOptions) (_ *ir.Model, err error) {
	m := &ir.Model{Provenance: ir.Provenance{Format: FormatName, Path: path}}
	defer func() {
		// Last resort: inputs are bounds-checked throughout, so a panic is
		// a bug; report it rather than crash the caller.
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: internal error: %v", path, p)
		}
		if err != nil {
			m.Close()
			err = fmt.Errorf("pytorch: %w", err)
		}
	}()
	files, dir, err := weightFiles(path)
	if err != nil {
		return nil, err
	}
	if files.index != "" {
		m.Provenance.Files = append(m.Provenance.Files, files.index)
	}
	var all []NamedTensor
	seen := map[string]string{}
	for _, p := range files.shards {
		ck, err := OpenCheckpoint(p)
		if err != nil {
			return nil, err
		}
		m.OnClose(ck)
		m.Provenance.Files = append(m.Provenance.Files, p)
		for _, n := range ck.Notes {
			m.Provenance.Notes = append(m.Provenance.Notes, filepath.Base(p)+": "+n)
		}
		ts, notes, err := stateDict(ck)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		m.Provenance.Notes = append(m.Provenance.Notes, notes...)
		for _, t := range ts {
			if prev, dup := seen[t.Name]; dup {
				return nil, fmt.Errorf("tensor %s is in both %s and %s", t.Name, prev, p)
			}
			seen[t.Name] = p
			if want, ok := files.weightMap[t.Name]; ok && filepath.Join(filepath.Dir(files.index), want) != p {
				return nil, fmt.Errorf("%s: tensor %s is listed in %s for %s", p, t.Name, files.index, want)
			}
			all = append(all, t)
		}
	}
	for name, shard := range files.weightMap {
		if _, ok := seen[name]; !ok {
			return nil, fmt.Errorf("%s lists tensor %s in %s, which does not hold it", files.index, name, shard)
		}
	}

	// Tokenizer: needed before inference can trim padded embeddings.
	tokPath := opts.TokenizerPath
	if tokPath == "" && fileExists(filepath.Join(dir, spFile)) {
		tokPath = filepath.Join(dir, spFile)
	}
	if tokPath != "" {
		tok, err := tokenizer.LoadSentencePiece(tokPath)
		if err != nil {
			return nil, err
		}
		m.Tokenizer = tok
		m.Provenance.Files = append(m.Provenance.Files, tokPath)
	} else {
		m.Provenance.Notes = append(m.Provenance.Notes, "no tokenizer.model given or beside the weights: the model has no tokenizer")
	}

	parts, notes, err := collect(all)
	if err != nil {
		return nil, err
	}
	m.Provenance.Notes = append(m.Provenance.Notes, notes...)

	cfgPath := opts.ConfigPath
	if cfgPath == "" && fileExists(filepath.Join(dir, configFile)) {
		cfgPath = filepath.Join(dir, configFile)
	}
	if cfgPath != "" {
		data, err := readSmallFile(cfgPath)
		if err != nil {
			return nil, err
		}
		cfg, err := ir.ConfigFromHF(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfgPath, err)
		}
		m.Config = cfg
		m.Provenance.Files = append(m.Provenance.Files, cfgPath)
		if fam := parts.family(); fam != cfg.Family {
			return nil, fmt.Errorf("%s describes a %s model, but the tensors are those of %s", cfgPath, cfg.Family, fam)
		}
	} else {
		cfg, note, err := inferConfig(parts, m.Tokenizer)
		if err != nil {
			return nil, err
		}
		m.Config = cfg
		m.Provenance.Notes = append(m.Provenance.Notes, note)
	}
	if opts.Arch != "" && opts.Arch != m.Config.Family {
		return nil, fmt.Errorf("the checkpoint is a %s model, but %s was requested", m.Config.Family, opts.Arch)
	}
	if m.Tokenizer != nil {
		fitTokenizer(m)
	}
	if err := parts.build(m); err != nil {
		return nil, err
	}
	ir.SortTensors(m.Tensors)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func readSmallFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJSONSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(data) > maxJSONSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxJSONSize)
	}
	return data, nil
}

// fitTokenizer pads the vocabulary with unused [PADn] pieces up to the
// config's vocab size, or drops pieces beyond it, as llama.cpp's converter
// and the safetensors reader do.
func fitTokenizer(m *ir.Model) {
	t, vocab := m.Tokenizer, m.Config.Vocab
	n := len(t.Pieces)
	switch {
	case n < vocab:
		for i := n; i < vocab; i++ {
			t.Pieces = append(t.Pieces, fmt.Sprintf("[PAD%d]", i))
			t.Scores = append(t.Scores, -10000)
			t.Types = append(t.Types, ir.TokenUnused)
		}
		m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("padded the vocabulary from %d to %d entries with unused [PAD] pieces", n, vocab))
	case n > vocab:
		t.Pieces, t.Scores, t.Types = t.Pieces[:vocab], t.Scores[:vocab], t.Types[:vocab]
		for _, id := range []*int32{&t.BOS, &t.EOS, &t.UNK, &t.PAD, &t.EOT} {
			if *id >= int32(vocab) {
				*id = -1
			}
		}
		m.Provenance.Notes = append(m.Provenance.Notes, fmt.Sprintf("dropped tokenizer pieces %d..%d beyond the vocab size %d", vocab, n-1, vocab))
	}
}

type weightSet struct {
	shards    []string
	index     string
	weightMap map[string]string
}

var shardName = func() func(string) bool {
	return func(base string) bool {
		// pytorch_model-00001-of-00002.bin
		s, ok := strings.CutSuffix(base, ".bin")
		if !ok {
			return false
		}
		i := strings.LastIndex(s, "-of-")
		if i < 0 {
			return false
		}
		j := strings.LastIndex(s[:i], "-")
		if j < 0 {
			return false
		}
		_, e1 := strconv.Atoi(s[j+1 : i])
		_, e2 := strconv.Atoi(s[i+4:])
		return e1 == nil && e2 == nil
	}
}()

// weightFiles resolves path to the checkpoint files to read and the
// directory where config.json and tokenizer.model may sit.
func weightFiles(path string) (weightSet, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return weightSet{}, "", err
	}
	if st.IsDir() {
		if idx := filepath.Join(path, hfIndex); fileExists(idx) {
			ws, err := readIndex(idx)
			return ws, path, err
		}
		if single := filepath.Join(path, hfSingle); fileExists(single) {
			return weightSet{shards: []string{single}}, path, nil
		}
		return weightSet{}, "", fmt.Errorf("%s: no %s or %s in the directory", path, hfSingle, hfIndex)
	}
	dir := filepath.Dir(path)
	if strings.HasSuffix(path, ".index.json") {
		ws, err := readIndex(path)
		return ws, dir, err
	}
	if shardName(filepath.Base(path)) {
		if idx := filepath.Join(dir, hfIndex); fileExists(idx) {
			ws, err := readIndex(idx)
			if err != nil {
				return ws, dir, err
			}
			for _, s := range ws.shards {
				if s == path || filepath.Clean(s) == filepath.Clean(path) {
					return ws, dir, nil
				}
			}
		}
	}
	return weightSet{shards: []string{path}}, dir, nil
}

// readIndex reads a Hugging Face shard index: {"weight_map": {tensor: file}}.
func readIndex(p string) (weightSet, error) {
	data, err := readSmallFile(p)
	if err != nil {
		return weightSet{}, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return weightSet{}, fmt.Errorf("%s: %w", p, err)
	}
	if len(idx.WeightMap) == 0 {
		return weightSet{}, fmt.Errorf("%s: empty weight_map", p)
	}
	ws := weightSet{index: p, weightMap: idx.WeightMap}
	uniq := map[string]bool{}
	for _, f := range idx.WeightMap {
		if f == "" || filepath.IsAbs(f) || strings.Contains(f, "/") || strings.Contains(f, `\`) || f == "." || f == ".." {
			return weightSet{}, fmt.Errorf("%s: shard name %q is not a file beside the index", p, f)
		}
		uniq[f] = true
	}
	for f := range uniq {
		ws.shards = append(ws.shards, filepath.Join(filepath.Dir(p), f))
	}
	sort.Strings(ws.shards)
	return ws, nil
}

// stateDict picks the state dict out of a checkpoint (gemma_pytorch wraps
// it as {'model_state_dict': ...}; training scripts use 'state_dict') and
// flattens it.
func stateDict(ck *Checkpoint) ([]NamedTensor, []string, error) {
	root, ok := ck.Root.(*Dict)
	if !ok {
		return nil, nil, fmt.Errorf("checkpoint holds a %s, not a dict of tensors", typeName(ck.Root))
	}
	var notes []string
	sd := any(root)
	for _, key := range []string{"model_state_dict", "state_dict"} {
		if v, ok := root.Get(key); ok {
			if _, isDict := v.(*Dict); isDict {
				sd = v
				if root.Len() > 1 {
					var other []string
					for _, k := range root.Keys {
						if k != key {
							other = append(other, describe(k))
						}
					}
					notes = append(notes, fmt.Sprintf("%s: used %q; ignored the other top-level entries %s", filepath.Base(ck.Path), key, brief(other)))
				}
				break
			}
		}
	}
	ts, skipped, err := Flatten(sd)
	if err != nil {
		return nil, nil, err
	}
	if len(skipped) > 0 {
		notes = append(notes, fmt.Sprintf("%s: ignored %d non-tensor entries %s", filepath.Base(ck.Path), len(skipped), brief(skipped)))
	}
	return ts, notes, nil
}

// brief lists at most ten names for a note.
func brief(names []string) string {
	if len(names) <= 10 {
		return "[" + strings.Join(names, " ") + "]"
	}
	return fmt.Sprintf("[%s ... and %d more]", strings.Join(names[:10], " "), len(names)-10)
}

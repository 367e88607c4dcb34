package quantize

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Metadata keys Prepare stamps besides general.file_type. llama-quantize
// writes the quantize.imatrix.* keys (tools/quantize/quantize.cpp); the
// gemmaconv.* keys are gemmaconv's provenance, named so that they collide
// with nothing llama.cpp reads (docs/quantize.md).
const (
	KeyImatrixFile    = "quantize.imatrix.file"
	KeyImatrixDataset = "quantize.imatrix.dataset"
	KeyImatrixEntries = "quantize.imatrix.entries_count"
	KeyImatrixChunks  = "quantize.imatrix.chunks_count"
	KeyVersion        = "gemmaconv.version"
	KeyPreset         = "gemmaconv.quantize.preset"
	KeyOptions        = "gemmaconv.quantize.options"
	KeySourceFormat   = "gemmaconv.source.format"
	KeySourceFiles    = "gemmaconv.source.files"
	KeySourceSHA256   = "gemmaconv.source.sha256"
	KeyImatrixSHA256  = "gemmaconv.imatrix.sha256"
)

// llamaKVOverrideSize: llama-quantize copies the imatrix strings into
// char[128].
const llamaKVOverrideSize = 127

// stampMetadata sets the keys llama-quantize sets, then gemmaconv's own.
// A source GGUF's own gemmaconv.* stamps describe an earlier step and are
// dropped; its other keys (quantize.imatrix.* included) are kept, as
// llama-quantize keeps every key of its input.
func stampMetadata(cm, src *ir.Model, res *Result, opts Options) error {
	kept := cm.Extra[:0:0]
	for _, kv := range cm.Extra {
		if !strings.HasPrefix(kv.Key, "gemmaconv.") {
			kept = append(kept, kv)
		}
	}
	cm.Extra = kept
	cm.SetExtra("general.file_type", uint32(res.FileType))
	im := opts.Imatrix
	if im != nil {
		cm.SetExtra(KeyImatrixFile, truncate(im.Path, llamaKVOverrideSize))
		if len(im.Datasets) > 0 {
			cm.SetExtra(KeyImatrixDataset, truncate(im.Datasets[0], llamaKVOverrideSize))
		}
		cm.SetExtra(KeyImatrixEntries, uint32(im.Entries))
		if im.Chunks > 0 {
			cm.SetExtra(KeyImatrixChunks, im.Chunks)
		}
	}
	cm.SetExtra(KeyVersion, opts.Version)
	cm.SetExtra(KeyPreset, res.FileType.String())
	if len(res.Options) > 0 {
		cm.SetExtra(KeyOptions, append([]string(nil), res.Options...))
	}
	if src.Provenance.Format != "" {
		cm.SetExtra(KeySourceFormat, src.Provenance.Format)
	}
	files := sourceFiles(src)
	if len(files) > 0 {
		rel := make([]string, len(files))
		for i, p := range files {
			rel[i] = relName(src.Provenance.Path, p)
		}
		cm.SetExtra(KeySourceFiles, rel)
		if !opts.NoSourceHash {
			sums, err := hashFiles(files, opts.Threads)
			if err != nil {
				return err
			}
			cm.SetExtra(KeySourceSHA256, sums)
		}
	}
	if im != nil {
		sums, err := hashFiles([]string{im.Path}, 1)
		if err != nil {
			return err
		}
		cm.SetExtra(KeyImatrixSHA256, sums[0])
	}
	return nil
}

// sourceFiles lists the files the reader opened, each once, in order.
func sourceFiles(m *ir.Model) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range m.Provenance.Files {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// relName names a source file relative to the path the user gave (its
// directory, for a file), with forward slashes, so the stamp does not
// depend on where the checkpoint lives.
func relName(root, p string) string {
	base := root
	if st, err := os.Stat(root); err == nil && !st.IsDir() {
		base = filepath.Dir(root)
	}
	if r, err := filepath.Rel(base, p); err == nil && !strings.HasPrefix(r, "..") {
		return filepath.ToSlash(r)
	}
	return filepath.Base(p)
}

// hashFiles returns each file's sha256 in hex, hashing up to threads files
// at once (0: GOMAXPROCS).
func hashFiles(paths []string, threads int) ([]string, error) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	sums := make([]string, len(paths))
	errs := make([]error, len(paths))
	sem := make(chan struct{}, threads)
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fh, err := os.Open(p)
			if err != nil {
				errs[i] = err
				return
			}
			defer fh.Close()
			h := sha256.New()
			if _, err := io.CopyBuffer(h, fh, make([]byte, 1<<20)); err != nil {
				errs[i] = fmt.Errorf("hashing %s: %w", p, err)
				return
			}
			sums[i] = hex.EncodeToString(h.Sum(nil))
		}()
	}
	wg.Wait()
	return sums, errors.Join(errs...)
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

package testmodel

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/gemmaconv/gemmaconv/ir"
)

// orbaxOptions are the knobs of writeOrbaxZarr that tests turn.
type orbaxOptions struct {
	chunkBytes int64 // target size of a chunk
	zstd       bool  // compress chunks (else raw)
}

// WriteOrbaxZarr writes the weights of (cfg, seed, dtype) — the values
// WriteHF writes — as an Orbax checkpoint in dir (created) in the layout
// without OCDBT: _CHECKPOINT_METADATA naming the PyTree handler,
// _METADATA with the tree's key paths, and one zarr v2 array per
// parameter in the directory named by its Orbax parameter name (the key
// path joined with "."; the tree is {"transformer/layer_0/attn/q_einsum":
// {"w": ...}, ...} as in Gemma's Kaggle checkpoints, so a name such as
// transformer/layer_0/attn/q_einsum.w nests directories). Arrays are in
// the JAX einsum layouts (see WriteFlaxMsgpack), chunked along their
// outer dimensions into zstd-compressed chunks of about 4 MiB. Memory
// stays at a few megabytes. No config or tokenizer is written: see
// WriteHFConfig.
func WriteOrbaxZarr(dir string, cfg ir.Config, seed int64, dtype ir.DType) error {
	return writeOrbaxZarr(dir, cfg, seed, dtype, orbaxOptions{chunkBytes: 4 << 20, zstd: true})
}

func writeOrbaxZarr(dir string, cfg ir.Config, seed int64, dtype ir.DType, opt orbaxOptions) (err error) {
	tensors, err := Tensors(cfg, seed, dtype)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	leaves, err := jaxLeaves(cfg, tensors, dir)
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range leaves {
			l.close()
		}
	}()
	var enc *zstd.Encoder
	if opt.zstd {
		// The "better" level entropy-codes literals, as C zstd's level 1
		// (tensorstore's) does; faster levels store random weights raw.
		enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		defer enc.Close()
	}
	es := int64(dtype.TypeSize())
	zdtype := map[ir.DType]string{ir.F32: "<f4", ir.F16: "<f2", ir.BF16: "bfloat16"}[dtype]
	compressor := "null"
	if opt.zstd {
		compressor = `{"id":"zstd","level":1}`
	}

	// Orbax's tree: module path → {leaf name: array}. _METADATA lists the
	// leaves in jax.tree_util's flattening order (sorted keys).
	type entry struct {
		module, name string
		leaf         *jaxLeaf
	}
	var entries []entry
	for _, l := range leaves {
		entries = append(entries, entry{strings.Join(l.path[:len(l.path)-1], "/"), l.path[len(l.path)-1], l})
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].module != entries[j].module {
			return entries[i].module < entries[j].module
		}
		return entries[i].name < entries[j].name
	})

	var chunk, out []byte
	for _, e := range entries {
		l := e.leaf
		adir := filepath.Join(dir, filepath.FromSlash(e.module+"."+e.name))
		if err := os.MkdirAll(adir, 0o755); err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		cs, k := rowChunks(l.shape, es, opt.chunkBytes)
		meta := fmt.Sprintf(`{"chunks":%s,"compressor":%s,"dimension_separator":".","dtype":%q,"fill_value":null,"filters":null,"order":"C","shape":%s,"zarr_format":2}`,
			jsonInts(cs), compressor, zdtype, jsonInts(l.shape))
		if err := os.WriteFile(filepath.Join(adir, ".zarray"), []byte(meta), 0o644); err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		// Dimensions before k are chunked by 1, k by cs[k], those after not
		// at all: each chunk is a contiguous run of the C-order bytes
		// (padded with zeros at the edge, as zarr v2 stores edge chunks).
		inner := es
		for _, d := range l.shape[k+1:] {
			inner *= d
		}
		full := cs[k] * inner
		if int64(cap(chunk)) < full {
			chunk = make([]byte, full)
		}
		chunk = chunk[:full]
		grid := make([]int64, len(cs))
		for d := range cs {
			grid[d] = (l.shape[d] + cs[d] - 1) / cs[d]
		}
		idx := make([]int64, len(cs))
		total := int64(1)
		for _, g := range grid {
			total *= g
		}
		for n := int64(0); n < total; n++ {
			rem := n
			for d := len(cs) - 1; d >= 0; d-- {
				idx[d] = rem % grid[d]
				rem /= grid[d]
			}
			// Byte offset of the chunk's first element.
			off := int64(0)
			for d := 0; d <= k; d++ {
				stride := inner
				for _, x := range l.shape[d+1 : k+1] {
					stride *= x
				}
				off += idx[d] * cs[d] * stride
			}
			rows := min(cs[k], l.shape[k]-idx[k]*cs[k])
			if got, err := l.src.ReadAt(chunk[:rows*inner], off); int64(got) < rows*inner {
				return fmt.Errorf("testmodel: %s: reading %v: %v", adir, l.path, err)
			}
			clear(chunk[rows*inner:])
			data := chunk
			if enc != nil {
				out = enc.EncodeAll(chunk, out[:0])
				data = out
			}
			key := make([]string, len(idx))
			for d, i := range idx {
				key[d] = strconv.FormatInt(i, 10)
			}
			if err := os.WriteFile(filepath.Join(adir, strings.Join(key, ".")), data, 0o644); err != nil {
				return fmt.Errorf("testmodel: %w", err)
			}
		}
		if err := l.close(); err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
	}

	// _METADATA: tree_metadata keyed by the Python repr of the key tuple.
	var b strings.Builder
	b.WriteString(`{"tree_metadata": {`)
	for i, e := range entries {
		if i > 0 {
			b.WriteString(", ")
		}
		key, _ := json.Marshal(fmt.Sprintf("('%s', '%s')", e.module, e.name))
		v, _ := json.Marshal(map[string]any{
			"key_metadata": []map[string]any{{"key": e.module, "key_type": 2}, {"key": e.name, "key_type": 2}},
			"value_metadata": map[string]any{"value_type": "jax.Array", "skip_deserialize": false,
				"write_shape": e.leaf.shape},
		})
		fmt.Fprintf(&b, "%s: %s", key, v)
	}
	b.WriteString(`}, "use_ocdbt": false, "use_zarr3": false, "store_array_data_equal_to_fill_value": true, "custom_metadata": null}`)
	if err := os.WriteFile(filepath.Join(dir, "_METADATA"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	cm := `{"item_handlers": "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler", "metrics": {}, "performance_metrics": {}, "init_timestamp_nsecs": 0, "commit_timestamp_nsecs": 0, "custom_metadata": {}}`
	if err := os.WriteFile(filepath.Join(dir, "_CHECKPOINT_METADATA"), []byte(cm), 0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	return nil
}

// rowChunks picks a chunk shape of about target bytes for an array:
// dimensions after k whole, as many rows of dimension k as fit (at least
// one), dimensions before k one at a time.
func rowChunks(shape []int64, es, target int64) (cs []int64, k int) {
	cs = make([]int64, len(shape))
	inner := es
	k = len(shape) - 1
	for k > 0 && inner*shape[k] <= target {
		inner *= shape[k]
		k--
	}
	for d := range cs {
		switch {
		case d < k:
			cs[d] = 1
		case d == k:
			cs[d] = min(shape[d], max(1, target/inner))
		default:
			cs[d] = shape[d]
		}
	}
	return cs, k
}

func jsonInts(v []int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

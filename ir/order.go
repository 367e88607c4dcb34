package ir

import (
	"sort"
	"strconv"
	"strings"
)

// blockOrder is the position of each per-layer tensor within its block in
// canonical order. It is llama.cpp's order for Gemma (Hugging Face's
// alphabetical key order mapped to GGUF names), so our files list tensors
// as its files do.
var blockOrder = map[string]int{
	"attn_norm.weight": 0, "ffn_down.weight": 1, "ffn_gate.weight": 2, "ffn_up.weight": 3,
	"post_attention_norm.weight": 4, "post_ffw_norm.weight": 5, "ffn_norm.weight": 6,
	"attn_k_norm.weight": 7, "attn_k.weight": 8, "attn_output.weight": 9,
	"attn_q_norm.weight": 10, "attn_q.weight": 11, "attn_v.weight": 12,
}

// sortKey orders token_embd first, then blocks by number (blk.2 before
// blk.10), then output_norm and output, then anything else by name.
func sortKey(name string) (group, block, pos int) {
	switch name {
	case "token_embd.weight":
		return 0, 0, 0
	case "output_norm.weight":
		return 2, 0, 0
	case "output.weight":
		return 2, 0, 1
	}
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		if num, suffix, ok := strings.Cut(rest, "."); ok {
			if n, err := strconv.Atoi(num); err == nil {
				p, known := blockOrder[suffix]
				if !known {
					p = len(blockOrder)
				}
				return 1, n, p
			}
		}
	}
	return 3, 0, 0
}

// SortTensors puts ts in canonical order, so every reader yields the same
// sequence whatever order its file uses.
func SortTensors(ts []*Tensor) {
	sort.SliceStable(ts, func(i, j int) bool {
		gi, bi, pi := sortKey(ts[i].Name)
		gj, bj, pj := sortKey(ts[j].Name)
		if gi != gj {
			return gi < gj
		}
		if bi != bj {
			return bi < bj
		}
		if pi != pj {
			return pi < pj
		}
		return ts[i].Name < ts[j].Name
	})
}

package runtime

import (
	"fmt"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

// benchConfig is a mid-sized synthetic Gemma 3: 4 layers of width 512,
// FFN 2048, 8 query and 4 kv heads of 64, vocabulary 8192 (about 20M
// weights).
func benchConfig() ir.Config {
	c := synthConfig()
	c.NumLayers, c.Hidden, c.FFN, c.NumHeads, c.NumKVHeads, c.HeadDim, c.Vocab = 4, 512, 2048, 8, 4, 64, 8192
	c.QueryPreAttnScalar, c.SlidingWindow = 64, 64
	c.Sliding = ir.DefaultSliding(ir.Gemma3, c.NumLayers)
	return c
}

// BenchmarkForward measures prefill (a 128-token batch from an empty
// cache, logits of every position) and decode (one token at a time after
// 64 positions) in tokens per second, for BF16 and Q4_K weights, streamed
// from their stored type or cached as float32.
func BenchmarkForward(b *testing.B) {
	c := benchConfig()
	vals := synthValues(c, 1)
	for _, typ := range []ir.DType{ir.BF16, ir.Q4_K} {
		im := synthModel(b, c, vals, typ)
		for _, cache := range []CacheMode{CacheNone, CacheAll} {
			md := mustLoad(b, im, Options{Cache: cache})
			name := fmt.Sprintf("%s/cached=%v", typ, md.Cached())
			prompt := randomTokens(128, c.Vocab, 1)
			b.Run("prefill128/"+name, func(b *testing.B) {
				st := md.NewState(len(prompt))
				for b.Loop() {
					st.Reset()
					if _, err := st.Forward(prompt); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*len(prompt))/b.Elapsed().Seconds(), "tokens/s")
			})
			b.Run("decode/"+name, func(b *testing.B) {
				st := md.NewState(128)
				tok := []int32{5}
				for b.Loop() {
					if st.Pos() == 128 {
						st.Reset()
					}
					if st.Pos() == 0 {
						if _, err := st.ForwardLast(prompt[:64]); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := st.ForwardLast(tok); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

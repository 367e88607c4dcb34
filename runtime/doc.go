// Package runtime is gemmaconv's reference runtime: the Gemma 1, 2 and 3
// text forward pass computed as Google's gemma_pytorch computes it
// (gemma/model.py, GemmaForCausalLM.forward) in float32, on any ir.Model
// whatever format it was read from and whatever type its weights are
// stored in. It exists to verify conversions: perplexity and KL divergence
// of a converted or quantized model against its source.
//
// # Precision
//
// Every tensor that gemma_pytorch materializes in float32 is rounded to
// float32 here at the same point, and each operation computes its float32
// result from float64 intermediates (so it is the correctly rounded value,
// or within an ulp of it, where PyTorch's kernels are within an ulp or two):
//
//   - embedding: the stored row widened to float32, times
//     float32(sqrt(hidden)) (gemma_pytorch's torch.tensor(hidden**0.5,
//     dtype=float32)), a float32 multiply.
//   - RMSNorm: squares rounded to float32 as x.pow(2) does, summed in
//     float64, the sum rounded to float32 and divided by the width in
//     float32 (sum then div_, as torch.mean does on CPU); + eps in float32;
//     rsqrt as 1/sqrt with both steps rounded to float32; then
//     (x*rsqrt)*(NormOffset+w), float32 multiplies, with NormOffset+w
//     added in float32 once at load time (as 1 + weight.float()).
//   - matrix products (projections, FFN, output logits): products of two
//     float32 are exact in float64; they are summed in float64 in one fixed
//     order (four lanes over the columns, then the lanes; see dot.go) and
//     rounded to float32 once, so results do not depend on the worker count.
//   - RoPE: inverse frequencies 1/theta^(2j/d) computed in float32 steps as
//     precompute_freqs_cis does (pow rounded to float32, a float32
//     reciprocal, a float32 division by the linear scale factor for global
//     layers); angle = float32(position)*freq rounded to float32; cos and
//     sin rounded to float32; each rotated component is computed in
//     float64 from the float32 inputs and rounded once.
//   - attention: queries times float32(query_pre_attn_scalar^-0.5) in
//     float32; scores as float64 dot products (the same kernels) rounded to
//     float32; softcap
//     as float32(s/cap), tanh rounded to float32, times cap; softmax with a
//     float32 max, exp and sum in float64, probabilities rounded to float32;
//     the weighted sum of values in float64, rounded to float32.
//   - GeGLU: the tanh-approximated GELU evaluated in float64 and rounded to
//     float32, times up in float32.
//   - residual adds and the final softcap: float32, as PyTorch does.
//
// Measured against gemma_pytorch's float32 logits on the fixture models
// (TestGoldenLogits) the relative error ‖Δ‖/‖ref‖ is 2.6e-7 (Gemma 1 and 3)
// and 7.6e-7 (Gemma 2), the largest |Δlogit| 1e-5; whole-corpus perplexity
// agrees to 2e-8 relative, also on quantized weights (TestQuantizedPerplexity).
// Transcendentals (exp, tanh, cos, sin) come from Go's math package, so bit
// identity across CPU architectures is not promised; across worker counts,
// batch sizes, caching and the AVX2 or Go dot kernels it is.
//
// # Memory
//
// Weights stay in their stored type inside the ir.Model (which must stay
// open while the runtime model is used); each Matrix dequantizes
// chunkRows rows at a time into a per-worker float32 scratch. Only norm
// weights (one row each) are decoded at load time. With Options.Cache the
// whole model is dequantized into float32 once instead, which is faster for
// single-token decoding (measured on a 20M-weight model: 2–2.5× the decode
// tokens/s for BF16 and Q4_K weights; prefill of 128 tokens is the same
// either way, as each batch dequantizes every row once); CacheAuto does that
// only for models whose float32 weights fit in AutoCacheBytes.
//
// # Importance matrices
//
// State.SetObserver shows an Observer the input rows of every weight-matrix
// product; without one the forward pass pays a nil check per product.
// ComputeImatrix uses it to collect llama-imatrix's statistics (per input
// column, the sum of squared activations, and the token count) on llama's
// chunking, summing in float64 in token order so the result is as
// deterministic as the logits. On the fixture models it agrees with
// llama-imatrix's own files within 9.3e-4 relative on every column (llama
// computes attention and GELU through f16 roundings).
//
// # Work
//
// Matrix products are split over chunks of weight rows, attention over
// (query, head) pairs, among Options.Workers goroutines; each output value
// is computed by one goroutine in a fixed order. On amd64 with AVX2 and FMA
// the dot products run in assembly (dot_amd64.s), 4 float64 lanes wide.
package runtime

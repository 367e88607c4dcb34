package runtime

import (
	"math"
	"sync/atomic"
)

// buffers are a State's activations for one batch, grown as needed.
type buffers struct {
	h, xn, q, k, v, att, a, g, u []float32
	xd                           []float64    // float64 copy of a matmul's input
	cos, sin                     [2][]float32 // [global/local][n × headDim/2]
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// mul multiplies m with n rows of x into out, first showing the rows to
// the State's observer when it has one.
func (s *State) mul(m *Matrix, x []float32, n int, out []float32) error {
	if s.observe != nil && n > 0 && len(x) >= n*m.Cols {
		s.observe(m.Name, x[:n*m.Cols], n, m.Cols)
	}
	return m.mul(x, n, out, s.m.workers, &s.buf.xd)
}

// step runs one batch of tokens (at most BatchSize) through every layer,
// appends them to the KV cache and, when out is not nil, writes the logits
// of tokens[from:] into out.
func (s *State) step(tokens []int32, from int, out []float32) error {
	md := s.m
	cfg := &md.Config
	n := len(tokens)
	H, KV, D := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	hid, ffn := cfg.Hidden, cfg.FFN
	b := &s.buf
	b.h = grow(b.h, n*hid)
	b.xn = grow(b.xn, n*hid)
	b.q = grow(b.q, n*H*D)
	b.k = grow(b.k, n*KV*D)
	b.v = grow(b.v, n*KV*D)
	b.att = grow(b.att, n*H*D)
	b.a = grow(b.a, n*hid)
	b.g = grow(b.g, n*ffn)
	b.u = grow(b.u, n*ffn)
	w := md.workers

	// Embedding lookup, scaled by sqrt(hidden) in float32.
	if err := md.embd.rows(tokens, b.h); err != nil {
		return err
	}
	for i, v := range b.h {
		b.h[i] = v * md.embScale
	}

	// RoPE tables for the batch's positions, global and local.
	for kind := 0; kind < 2; kind++ {
		b.cos[kind] = grow(b.cos[kind], n*D/2)
		b.sin[kind] = grow(b.sin[kind], n*D/2)
		for i := 0; i < n; i++ {
			pos := float32(s.pos + i)
			for j, f := range md.freqs[kind] {
				ang := float64(pos * f)
				b.cos[kind][i*D/2+j] = float32(math.Cos(ang))
				b.sin[kind][i*D/2+j] = float32(math.Sin(ang))
			}
		}
	}

	eps := cfg.RMSNormEps
	for li := range md.layers {
		l := &md.layers[li]
		rmsNormRows(b.xn, b.h, l.attnNorm, eps, hid)
		if err := s.mul(l.q, b.xn, n, b.q); err != nil {
			return err
		}
		if err := s.mul(l.k, b.xn, n, b.k); err != nil {
			return err
		}
		if err := s.mul(l.v, b.xn, n, b.v); err != nil {
			return err
		}
		if cfg.QKNorm {
			rmsNormRows(b.q, b.q, l.qNorm, eps, D)
			rmsNormRows(b.k, b.k, l.kNorm, eps, D)
		}
		kind := 0
		if l.sliding {
			kind = 1
		}
		rope(b.q, n, H, D, b.cos[kind], b.sin[kind])
		rope(b.k, n, KV, D, b.cos[kind], b.sin[kind])
		for i := range b.q {
			b.q[i] *= md.qScale
		}
		// Append keys and values to the cache (a ring for sliding layers).
		kvDim := KV * D
		size := s.size[li]
		for i := 0; i < n; i++ {
			slot := (s.pos + i) % size
			copy(s.kc[li][slot*kvDim:(slot+1)*kvDim], b.k[i*kvDim:(i+1)*kvDim])
			copy(s.vc[li][slot*kvDim:(slot+1)*kvDim], b.v[i*kvDim:(i+1)*kvDim])
		}
		s.attention(li, n)
		if err := s.mul(l.o, b.att, n, b.a); err != nil {
			return err
		}
		if cfg.PostNorms {
			rmsNormRows(b.a, b.a, l.postAttnNorm, eps, hid)
		}
		for i, v := range b.a {
			b.h[i] += v
		}

		rmsNormRows(b.xn, b.h, l.ffnNorm, eps, hid)
		if err := s.mul(l.gate, b.xn, n, b.g); err != nil {
			return err
		}
		if err := s.mul(l.up, b.xn, n, b.u); err != nil {
			return err
		}
		parallelFor(n, min(w, split(int64(n)*int64(ffn)*16)), func(i int) {
			g, u := b.g[i*ffn:(i+1)*ffn], b.u[i*ffn:(i+1)*ffn]
			for j, x := range g {
				g[j] = gelu(x) * u[j]
			}
		})
		if err := s.mul(l.down, b.g, n, b.a); err != nil {
			return err
		}
		if cfg.PostNorms {
			rmsNormRows(b.a, b.a, l.postFFNNorm, eps, hid)
		}
		for i, v := range b.a {
			b.h[i] += v
		}
	}
	s.pos += n

	if out == nil || from >= n {
		return nil
	}
	m := n - from
	rmsNormRows(b.xn[:m*hid], b.h[from*hid:], md.outputNorm, eps, hid)
	if err := s.mul(md.output, b.xn, m, out); err != nil {
		return err
	}
	if c := cfg.FinalSoftcap; c > 0 {
		softcap(out[:m*cfg.Vocab], c)
	}
	return nil
}

// attention computes b.att for the batch's n queries (rotated and scaled,
// at positions s.pos .. s.pos+n-1, whose keys and values are already in the
// cache). Query i attends to positions j <= s.pos+i, and for sliding layers
// only to j > s.pos+i-window: gemma_pytorch's causal mask plus
// tril(-inf, diagonal=-window). Masked positions get exp(-2.38e38) = 0 there,
// so leaving them out is exact. Each (query, head) pair is one work item.
func (s *State) attention(li, n int) {
	md := s.m
	cfg := &md.Config
	H, KV, D := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	rep := H / KV
	kvDim := KV * D
	size := s.size[li]
	sliding := md.layers[li].sliding
	kc, vc := s.kc[li], s.vc[li]
	b := &s.buf
	capf := cfg.AttnSoftcap
	var next atomic.Int64
	span := int64(min(s.pos+n, size)) // keys per query, at most
	parallel(min(md.workers, n*H, split(int64(n*H)*span*int64(2*D))), func() {
		scores := make([]float32, 0, size)
		probs := make([]float64, 0, size)
		acc := make([]float64, D)
		qd := make([]float64, D)
		for {
			item := int(next.Add(1) - 1)
			if item >= n*H {
				return
			}
			i, h := item/H, item%H
			p := s.pos + i // absolute position of the query
			lo := 0
			if sliding {
				lo = max(0, p-cfg.SlidingWindow+1)
			}
			for x, v := range b.q[(i*H+h)*D : (i*H+h+1)*D] {
				qd[x] = float64(v)
			}
			koff := (h / rep) * D
			key := func(j int) []float32 {
				slot := j % size
				return kc[slot*kvDim+koff : slot*kvDim+koff+D]
			}
			scores = scores[:0]
			j := lo
			for ; j+4 <= p+1; j += 4 {
				d := dot4x1(key(j), key(j+1), key(j+2), key(j+3), qd)
				scores = append(scores, float32(d[0]), float32(d[1]), float32(d[2]), float32(d[3]))
			}
			for ; j <= p; j++ {
				scores = append(scores, float32(dotLanes(key(j), qd)))
			}
			mx := float32(math.Inf(-1))
			for x, sc := range scores {
				if capf > 0 {
					sc = float32(math.Tanh(float64(sc/capf))) * capf
					scores[x] = sc
				}
				mx = max(mx, sc)
			}
			probs = probs[:0]
			var sum float64
			for _, sc := range scores {
				e := math.Exp(float64(sc - mx))
				probs = append(probs, e)
				sum += e
			}
			clear(acc)
			for jj, e := range probs {
				pr := float64(float32(e / sum))
				slot := (lo + jj) % size
				v := vc[slot*kvDim+koff : slot*kvDim+koff+D]
				for x := range acc {
					acc[x] += pr * float64(v[x])
				}
			}
			o := b.att[(i*H+h)*D : (i*H+h+1)*D]
			for x := range o {
				o[x] = float32(acc[x])
			}
		}
	})
}

// rmsNormRows normalizes each row of width d of src into dst (which may be
// src): x * rsqrt(mean(x²) + eps) * w, rounded as gemma_pytorch's RMSNorm
// rounds in float32 (see the package comment). w holds NormOffset + weight.
func rmsNormRows(dst, src, w []float32, eps float32, d int) {
	w = w[:d]
	for r := 0; r+d <= len(dst); r += d {
		x, y := src[r:r+d], dst[r:r+d]
		var ss float64
		for _, v := range x {
			ss += float64(v * v)
		}
		ms := float32(ss) / float32(d)
		rs := 1 / float32(math.Sqrt(float64(ms+eps)))
		for i, v := range x {
			y[i] = (v * rs) * w[i]
		}
	}
}

// rope rotates each head of x (n tokens × heads × d) in gemma_pytorch's
// half-split layout: the first half holds real parts, the second half
// imaginary parts, each pair multiplied by (cos + i·sin) of its position.
func rope(x []float32, n, heads, d int, cos, sin []float32) {
	half := d / 2
	for i := 0; i < n; i++ {
		c, s := cos[i*half:(i+1)*half], sin[i*half:(i+1)*half]
		for h := 0; h < heads; h++ {
			v := x[(i*heads+h)*d : (i*heads+h+1)*d]
			re, im := v[:half], v[half:d]
			for j := range re {
				a, b := float64(re[j]), float64(im[j])
				cj, sj := float64(c[j]), float64(s[j])
				re[j] = float32(a*cj - b*sj)
				im[j] = float32(a*sj + b*cj)
			}
		}
	}
}

// gelu is PyTorch's tanh-approximated GELU,
// 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))), evaluated in float64 as the
// equal x / (1 + exp(−2·sqrt(2/π)·(x + 0.044715·x³))) (one exp instead of a
// tanh; either is far more precise than the float32 result needs).
func gelu(x float32) float32 {
	v := float64(x)
	const k = 2 * 0.7978845608028654 // 2·sqrt(2/π)
	return float32(v / (1 + math.Exp(-k*(v+0.044715*v*v*v))))
}

// softcap applies cap·tanh(x/cap) in float32 steps, as gemma_pytorch does
// (divide, tanh, multiply).
func softcap(x []float32, c float32) {
	for i, v := range x {
		x[i] = float32(math.Tanh(float64(v/c))) * c
	}
}

package runtime

// The dot-product kernels. Every output is a float64 sum of exact
// products (float32 weight × float32-valued activation), in one fixed
// order: four lanes, lane k summing columns i ≡ k (mod 4) of the first
// n &^ 3 columns in increasing order, reduced as (lane0+lane2)+(lane1+lane3),
// then the remaining columns added in order. The AVX2 kernels
// (dot_amd64.s) and the Go ones produce identical bits, so results depend
// neither on the CPU nor on the number of workers.

// dotLanes returns w·x in the canonical order.
func dotLanes(w []float32, x []float64) float64 {
	n := len(w)
	x = x[:n]
	n4 := n &^ 3
	var a0, a1, a2, a3 float64
	for i := 0; i < n4; i += 4 {
		a0 += x[i] * float64(w[i])
		a1 += x[i+1] * float64(w[i+1])
		a2 += x[i+2] * float64(w[i+2])
		a3 += x[i+3] * float64(w[i+3])
	}
	return dotTail((a0+a2)+(a1+a3), w, x, n4)
}

// dotTail adds the products of columns from.. to s in order.
func dotTail(s float64, w []float32, x []float64, from int) float64 {
	for i := from; i < len(w); i++ {
		s += x[i] * float64(w[i])
	}
	return s
}

// dot2x4 returns the eight dot products of weight rows w0, w1 with
// activations x0..x3, ordered (x0·w0, x0·w1, x1·w0, x1·w1, ...).
func dot2x4(w0, w1 []float32, x0, x1, x2, x3 []float64) (r [8]float64) {
	n := len(w0)
	w1 = w1[:n]
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	n4 := n &^ 3
	if !hasAVX2 || n4 == 0 {
		for j, x := range [4][]float64{x0, x1, x2, x3} {
			r[2*j] = dotLanes(w0, x)
			r[2*j+1] = dotLanes(w1, x)
		}
		return r
	}
	dot2x4AVX2(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], n4, &r)
	if n4 < n {
		for j, x := range [4][]float64{x0, x1, x2, x3} {
			r[2*j] = dotTail(r[2*j], w0, x, n4)
			r[2*j+1] = dotTail(r[2*j+1], w1, x, n4)
		}
	}
	return r
}

// dot4x1 returns w0·x .. w3·x.
func dot4x1(w0, w1, w2, w3 []float32, x []float64) (r [4]float64) {
	n := len(x)
	ws := [4][]float32{w0[:n], w1[:n], w2[:n], w3[:n]}
	n4 := n &^ 3
	if !hasAVX2 || n4 == 0 {
		for j, w := range ws {
			r[j] = dotLanes(w, x)
		}
		return r
	}
	dot4x1AVX2(&ws[0][0], &ws[1][0], &ws[2][0], &ws[3][0], &x[0], n4, &r)
	if n4 < n {
		for j, w := range ws {
			r[j] = dotTail(r[j], w, x, n4)
		}
	}
	return r
}

// dot1x4 returns w·x0 .. w·x3.
func dot1x4(w []float32, x0, x1, x2, x3 []float64) (r [4]float64) {
	for j, x := range [4][]float64{x0, x1, x2, x3} {
		r[j] = dotLanes(w, x)
	}
	return r
}

// dot1x1 returns w·x.
func dot1x1(w []float32, x []float64) float64 { return dotLanes(w, x) }

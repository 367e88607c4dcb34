package quantize

import "math"

// Shared scale searches of ggml's k-quants (make_qx_quants and friends in
// ggml-quants.c). They are written to round exactly as ggml's reference
// build does, which is compiled without fused multiply-add:
//
//   - every product that C adds to something is wrapped in float32(...),
//     which the Go spec says rounds and so forbids fusing it into an FMA;
//   - arguments to nearestInt are wrapped too, because nearestInt adds a
//     constant and, once inlined, a bare product could fuse with that add;
//   - sums are sequential float32 sums in C's order, and ints meet floats
//     where C converts them.

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it is treated as all zeros.
const groupMaxEps float32 = 1e-15

// sqrt32 is sqrtf. A float64 square root rounded to float32 is the
// correctly rounded float32 square root, as sqrtss gives.
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// clampInt32 is MAX(lo, MIN(hi, v)).
func clampInt32(v, lo, hi int32) int32 {
	if v > hi {
		v = hi
	}
	if v < lo {
		v = lo
	}
	return v
}

// qxWeight is the per-element weight make_qx_quants uses: the importance
// weight when given, else a function of x chosen by rmseType.
func qxWeight(qw []float32, i int, x float32, rmseType int) float32 {
	switch {
	case qw != nil:
		return qw[i]
	case rmseType == 1:
		return float32(x * x)
	case rmseType == 2:
		return 1
	case rmseType == 3:
		return absf(x)
	default:
		return sqrt32(absf(x))
	}
}

// qxWeights returns qw[:len(x)], or when qw is nil the weights qxWeight
// picks for rmseType, written to buf when it is long enough. The searches
// take their weights from it once rather than once per scale tried.
func qxWeights(qw, x []float32, rmseType int, buf *[32]float32) []float32 {
	if qw != nil {
		return qw[:len(x)]
	}
	w := buf[:0]
	if len(x) > len(buf) {
		w = make([]float32, 0, len(x))
	}
	for _, v := range x {
		w = append(w, qxWeight(nil, 0, v, rmseType))
	}
	return w
}

// makeQXQuants is ggml's make_qx_quants: symmetric quantization of x[:n]
// to L in [0, 2*nmax), returning the scale. rmseType 0 only rounds; a
// negative rmseType returns after the first least-squares step; otherwise
// 18 nearby scales are tried. qw, when not nil, replaces the weights that
// rmseType selects.
func makeQXQuants(n, nmax int, x []float32, L []int8, rmseType int, qw []float32) float32 {
	x, L = x[:n], L[:n]
	var max, amax float32
	for _, v := range x {
		if ax := absf(v); ax > amax {
			amax, max = ax, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	nm := int32(nmax)
	iscale := float32(-nm) / max
	if rmseType == 0 {
		for i, v := range x {
			l := nearestInt(float32(iscale * v))
			L[i] = int8(nm + clampInt32(l, -nm, nm-1))
		}
		return 1 / iscale
	}
	returnEarly := false
	if rmseType < 0 {
		rmseType = -rmseType
		returnEarly = true
	}
	var buf [32]float32
	weights := qxWeights(qw, x, rmseType, &buf)[:n]
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt32(nearestInt(float32(iscale*v)), -nm, nm-1)
		L[i] = int8(l + nm)
		w := weights[i]
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	if returnEarly {
		if suml2 > 0 {
			return 0.5 * (scale + 1/iscale)
		}
		return 1 / iscale
	}
	best := scale * sumlx
	for is := int32(-9); is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nm) + float32(float32(0.1)*float32(is))) / max
		sumlx, suml2 = 0, 0
		for i, v := range x {
			l := clampInt32(nearestInt(float32(iscale*v)), -nm, nm-1)
			w := weights[i]
			fl := float32(l)
			sumlx += float32(float32(w*v) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			for i, v := range x {
				l := nearestInt(float32(iscale * v))
				L[i] = int8(nm + clampInt32(l, -nm, nm-1))
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// makeQ3Quants is ggml's make_q3_quants: symmetric quantization of x[:n]
// to L in [0, 2*nmax) with x*x weights, refined by coordinate descent when
// doRMSE is set. It returns the scale.
func makeQ3Quants(n, nmax int, x []float32, L []int8, doRMSE bool) float32 {
	x, L = x[:n], L[:n]
	var max, amax float32
	for _, v := range x {
		if ax := absf(v); ax > amax {
			amax, max = ax, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	nm := int32(nmax)
	iscale := float32(-nm) / max
	if !doRMSE {
		for i, v := range x {
			l := clampInt32(nearestInt(float32(iscale*v)), -nm, nm-1)
			L[i] = int8(l + nm)
		}
		return 1 / iscale
	}
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt32(nearestInt(float32(iscale*v)), -nm, nm-1)
		L[i] = int8(l)
		w := float32(v * v)
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	for itry := 0; itry < 5; itry++ {
		changed := 0
		for i, v := range x {
			w := float32(v * v)
			li := float32(L[i])
			slx := sumlx - float32(float32(w*v)*li)
			if slx > 0 {
				sl2 := suml2 - float32(float32(w*li)*li)
				newL := clampInt32(nearestInt(float32(float32(v*sl2)/slx)), -nm, nm-1)
				if newL != int32(L[i]) {
					fn := float32(newL)
					slx += float32(float32(w*v) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2 {
						L[i] = int8(newL)
						sumlx, suml2 = slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	for i := range L {
		L[i] += int8(nm)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// makeQKX2Quants is ggml's make_qkx2_quants: asymmetric quantization of
// x[:n] to L in [0, nmax] as scale*L - min, searching nstep+1 scales from
// (nmax+rmin)/(max-min) in steps of rdelta and keeping the one with the
// least weighted error (absolute when useMad, squared otherwise). Laux is
// scratch of n bytes. It returns the scale and the (non-negative) min.
func makeQKX2Quants(n, nmax int, x, weights []float32, L, Laux []uint8,
	rmin, rdelta float32, nstep int, useMad bool) (scale, theMin float32) {
	x, weights, L, Laux = x[:n], weights[:n], L[:n], Laux[:n]
	min, max := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		v := x[i]
		if v < min {
			min = v
		}
		if v > max {
			max = v
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * v)
	}
	if min > 0 {
		min = 0
	}
	if max == min {
		clear(L)
		return 0, -min
	}
	nm := int32(nmax)
	iscale := float32(nm) / (max - min)
	scale = 1 / iscale
	for i, v := range x {
		l := nearestInt(float32(iscale * (v - min)))
		L[i] = uint8(clampInt32(l, 0, nm))
	}
	bestError := weightedError(x, weights, L, scale, min, useMad)
	if nstep < 1 {
		return scale, -min
	}
	for is := int32(0); is <= int32(nstep); is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + float32(nm)) / (max - min)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt32(nearestInt(float32(iscale*(v-min))), 0, nm)
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			wl := float32(w * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			curError := weightedError(x, weights, Laux, thisScale, thisMin, useMad)
			if curError < bestError {
				copy(L, Laux)
				bestError = curError
				scale = thisScale
				min = thisMin
			}
		}
	}
	return scale, -min
}

// weightedError is the error make_qkx2_quants and make_qkx3_quants
// minimize: the sum over x, in order, of w[i] times the absolute (useMad)
// or squared difference between scale*L[i] + min and x[i]. useMad is
// tested outside the loops, where it costs nothing per element.
func weightedError(x, w []float32, L []uint8, scale, min float32, useMad bool) float32 {
	w, L = w[:len(x)], L[:len(x)]
	var e float32
	if useMad {
		for i, v := range x {
			diff := float32(scale*float32(L[i])) + min - v
			e += float32(w[i] * absf(diff))
		}
		return e
	}
	for i, v := range x {
		diff := float32(scale*float32(L[i])) + min - v
		e += float32(w[i] * float32(diff*diff))
	}
	return e
}

// makeQKX3Quants is ggml's make_qkx3_quants, which differs from
// make_qkx2_quants only in taking x*x as the weights when weights is nil
// (its degenerate test max <= min is max == min once min is clamped to at
// most 0, and both are false for NaN). The legacy _1 types' weighted
// quantizers and the k-quants' imatrix paths use it.
func makeQKX3Quants(n, nmax int, x, weights []float32, L, Laux []uint8,
	rmin, rdelta float32, nstep int, useMad bool) (scale, theMin float32) {
	var buf [32]float32
	weights = qxWeights(weights, x[:n], 1, &buf) // rmse_type 1 weighs by x*x
	return makeQKX2Quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, useMad)
}

// makeQPQuants is ggml's make_qp_quants: quantization of the non-negative
// x[:n] (sub-block scales or mins) to L in [0, nmax] with weights qw,
// returning the scale. As in C, a negative rounded value is stored
// truncated to a byte and later reads see that byte.
func makeQPQuants(n, nmax int, x []float32, L []uint8, qw []float32) float32 {
	x, L, qw = x[:n], L[:n], qw[:n]
	var max float32
	for _, v := range x {
		if !(max > v) { // MAX(max, v)
			max = v
		}
	}
	if max < groupMaxEps {
		clear(L)
		return 0
	}
	nm := int32(nmax)
	iscale := float32(nm) / max
	for i, v := range x {
		L[i] = uint8(nearestInt(float32(iscale * v)))
	}
	scale := 1 / iscale
	var bestMSE float32
	for i, v := range x {
		diff := v - float32(scale*float32(L[i]))
		bestMSE += float32(float32(qw[i]*diff) * diff)
	}
	for is := int32(-4); is <= 4; is++ {
		if is == 0 {
			continue
		}
		iscaleIs := (float32(float32(0.1)*float32(is)) + float32(nm)) / max
		scaleIs := 1 / iscaleIs
		var mse float32
		for i, v := range x {
			l := min(nm, nearestInt(float32(iscaleIs*v)))
			diff := v - float32(scaleIs*float32(l))
			mse += float32(float32(qw[i]*diff) * diff)
		}
		if mse < bestMSE {
			bestMSE = mse
			iscale = iscaleIs
		}
	}
	var sumlx, suml2 float32
	for i, v := range x {
		l := min(nm, nearestInt(float32(iscale*v)))
		L[i] = uint8(l)
		w := qw[i]
		fl := float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	for itry := 0; itry < 5; itry++ {
		changed := 0
		for i, v := range x {
			w := qw[i]
			li := float32(L[i])
			slx := sumlx - float32(float32(w*v)*li)
			sl2 := suml2 - float32(float32(w*li)*li)
			if slx > 0 && sl2 > 0 {
				newL := min(nm, nearestInt(float32(float32(v*sl2)/slx)))
				if newL != int32(L[i]) {
					fn := float32(newL)
					slx += float32(float32(w*v) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if slx*slx*suml2 > sumlx*sumlx*sl2 {
						L[i] = uint8(newL)
						sumlx, suml2 = slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// getScaleMinK4 is ggml's get_scale_min_k4: the 6-bit scale and min of
// sub-block j from the 12 packed scale bytes of a Q4_K or Q5_K block.
func getScaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	d = q[j+4]&0xF | (q[j-4]>>6)<<4
	m = q[j+4]>>4 | (q[j]>>6)<<4
	return d, m
}

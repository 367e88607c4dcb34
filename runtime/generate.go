package runtime

import (
	"errors"
	"math"
)

// Generate continues prompt greedily: it appends the most likely token
// until one of stop is produced (not included in the result) or maxNew
// tokens were generated, calling emit (when not nil) with each new token.
// It returns the generated ids.
func Generate(m *Model, prompt []int32, maxNew int, stop []int32, emit func(id int32)) ([]int32, error) {
	if len(prompt) == 0 {
		return nil, errors.New("runtime: empty prompt")
	}
	if maxNew < 0 {
		maxNew = 0
	}
	st := m.NewState(len(prompt) + maxNew)
	var out []int32
	input := prompt
	for len(out) < maxNew {
		logits, err := st.ForwardLast(input)
		if err != nil {
			return out, err
		}
		next := int32(Argmax(logits))
		for _, s := range stop {
			if next == s {
				return out, nil
			}
		}
		out = append(out, next)
		if emit != nil {
			emit(next)
		}
		input = []int32{next}
	}
	return out, nil
}

// Argmax returns the index of the first largest value (NaN never wins).
func Argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] || (math.IsNaN(float64(v[best])) && !math.IsNaN(float64(x))) {
			best = i
		}
	}
	return best
}

package verify

import (
	"encoding/json"
	"math"
	"strconv"
)

// Num is a float64 report figure. It marshals as a JSON number when
// finite and as the strings "NaN", "+Inf" or "-Inf" otherwise, so a
// corrupt tensor's report still encodes (encoding/json rejects non-finite
// floats) and says what went wrong.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	switch {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler, accepting what MarshalJSON
// writes.
func (n *Num) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		switch s {
		case "NaN":
			*n = Num(math.NaN())
		case "+Inf", "Inf":
			*n = Num(math.Inf(1))
		case "-Inf":
			*n = Num(math.Inf(-1))
		default:
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return err
			}
			*n = Num(f)
		}
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}

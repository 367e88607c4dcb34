package quantize

import (
	"fmt"
	"strings"
)

// presetNames are the presets gemmaconv quantize accepts, as
// llama-quantize names them. The IQ1/IQ2/IQ3 presets are missing: there
// are no kernels for their types.
var presetNames = []string{"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
	"Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE", "F16", "BF16", "F32"}

// presetAliases are llama-quantize's other names for presets.
var presetAliases = map[string]string{"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "MXFP4": "MXFP4_MOE"}

// PresetNames lists the presets ParsePreset accepts, in llama-quantize's
// spelling and order (aliases left out).
func PresetNames() []string { return append([]string(nil), presetNames...) }

// ParsePreset maps a preset name (case-insensitive, llama-quantize's
// aliases Q3_K, Q4_K, Q5_K and MXFP4 accepted) to its file type.
func ParsePreset(name string) (FileType, error) {
	up := strings.ToUpper(name)
	if a, ok := presetAliases[up]; ok {
		up = a
	}
	for _, p := range presetNames {
		if p == up {
			if p == "MXFP4_MOE" {
				return FileMXFP4, nil
			}
			return ParseFileType(p)
		}
	}
	return fileTypeNone, fmt.Errorf("%q is not a preset gemmaconv knows; want one of %s", name, strings.Join(presetNames, ", "))
}

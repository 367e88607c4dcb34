package quantize

import (
	"fmt"
	"strings"

	"github.com/gemmaconv/gemmaconv/ir"
)

// FileType is llama.cpp's llama_ftype: the "mostly" type of a GGUF file,
// stored as general.file_type. Presets such as Q4_K_M are file types.
type FileType uint32

// The llama_ftype values gemmaconv writes.
const (
	FileAllF32   FileType = 0
	FileF16      FileType = 1
	FileQ4_0     FileType = 2
	FileQ4_1     FileType = 3
	FileQ8_0     FileType = 7
	FileQ5_0     FileType = 8
	FileQ5_1     FileType = 9
	FileQ2_K     FileType = 10
	FileQ3_K_S   FileType = 11
	FileQ3_K_M   FileType = 12
	FileQ3_K_L   FileType = 13
	FileQ4_K_S   FileType = 14
	FileQ4_K_M   FileType = 15
	FileQ5_K_S   FileType = 16
	FileQ5_K_M   FileType = 17
	FileQ6_K     FileType = 18
	FileIQ4_NL   FileType = 25
	FileIQ4_XS   FileType = 30
	FileBF16     FileType = 32
	FileTQ1_0    FileType = 36
	FileTQ2_0    FileType = 37
	FileMXFP4    FileType = 38
	fileTypeNone FileType = 1<<32 - 1
)

var fileTypeNames = map[FileType]string{
	FileAllF32: "F32", FileF16: "F16", FileQ4_0: "Q4_0", FileQ4_1: "Q4_1", FileQ8_0: "Q8_0",
	FileQ5_0: "Q5_0", FileQ5_1: "Q5_1", FileQ2_K: "Q2_K", FileQ3_K_S: "Q3_K_S", FileQ3_K_M: "Q3_K_M",
	FileQ3_K_L: "Q3_K_L", FileQ4_K_S: "Q4_K_S", FileQ4_K_M: "Q4_K_M", FileQ5_K_S: "Q5_K_S",
	FileQ5_K_M: "Q5_K_M", FileQ6_K: "Q6_K", FileIQ4_NL: "IQ4_NL", FileIQ4_XS: "IQ4_XS", FileBF16: "BF16",
	FileTQ1_0: "TQ1_0", FileTQ2_0: "TQ2_0", FileMXFP4: "MXFP4",
}

// String returns the preset name ("Q4_K_M").
func (f FileType) String() string {
	if n, ok := fileTypeNames[f]; ok {
		return n
	}
	return fmt.Sprintf("FileType(%d)", uint32(f))
}

// ParseFileType maps a preset or float type name (case-insensitive) to its
// file type.
func ParseFileType(name string) (FileType, error) {
	for f, n := range fileTypeNames {
		if strings.EqualFold(n, name) {
			return f, nil
		}
	}
	return fileTypeNone, fmt.Errorf("unknown type %q", name)
}

// FloatPlan gives each tensor the type llama.cpp's converter gives it for
// an f32/f16/bf16 output: 1-D tensors (norms) F32, everything else t.
func FloatPlan(m *ir.Model, t ir.DType) (map[string]ir.DType, error) {
	switch t {
	case ir.F32, ir.F16, ir.BF16:
	default:
		return nil, fmt.Errorf("output type %s is not f32, f16 or bf16", t)
	}
	plan := make(map[string]ir.DType, len(m.Tensors))
	for _, tn := range m.Tensors {
		if len(tn.Shape) == 1 {
			plan[tn.Name] = ir.F32
		} else {
			plan[tn.Name] = t
		}
	}
	return plan, nil
}

// FloatFileType is the file type of a float output type.
func FloatFileType(t ir.DType) FileType {
	switch t {
	case ir.F16:
		return FileF16
	case ir.BF16:
		return FileBF16
	}
	return FileAllF32
}

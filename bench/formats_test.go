package bench

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gemmaconv/gemmaconv/internal/testmodel"
	"github.com/gemmaconv/gemmaconv/ir"
)

// Benchmarks of converting the synthetic Gemma-2B-shaped bf16 model
// (~4.7 GiB, the weights of BenchmarkConvertGemma2B's checkpoint) from
// each non-Hugging Face source format. Besides wall time and peak RSS
// they report the largest tensor's size, the floor a converter that
// streams tensor by tensor can be compared with (issue: peak RSS stays
// near the largest tensor).

// benchRoot is where synthetic checkpoints are cached.
func benchRoot() string {
	if root := os.Getenv("GEMMACONV_BENCH_DIR"); root != "" {
		return root
	}
	return os.TempDir()
}

// syntheticFormat returns the directory holding the synthetic checkpoint
// of format name — the checkpoint (file or directory) named by ckpt, plus
// config.json and tokenizer.model — writing it on first use.
func syntheticFormat(b *testing.B, name, ckpt string, write func(path string, cfg ir.Config, seed int64, dtype ir.DType) error) (dir, src string) {
	b.Helper()
	dir = filepath.Join(benchRoot(), "gemmaconv-bench-gemma2b-"+name+"-bf16")
	src = filepath.Join(dir, ckpt)
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir, src
	}
	os.RemoveAll(dir)
	start := time.Now()
	cfg := testmodel.Gemma2BConfig()
	if err := testmodel.WriteHFConfig(dir, cfg, ir.BF16); err != nil {
		b.Fatal(err)
	}
	if err := write(src, cfg, 1, ir.BF16); err != nil {
		b.Fatalf("writing synthetic %s checkpoint: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %s in %s", src, time.Since(start).Round(time.Second))
	fmt.Fprintf(os.Stderr, "generated %s in %s\n", src, time.Since(start).Round(time.Second))
	return dir, src
}

// largestTensorBytes is the size of cfg's largest tensor in bf16.
func largestTensorBytes(cfg ir.Config) int64 {
	var m int64
	for _, s := range ir.ExpectedTensors(cfg) {
		n := int64(ir.BF16.TypeSize())
		for _, d := range s.Shape {
			n *= d
		}
		m = max(m, n)
	}
	return m
}

func diskBytes(path string) int64 {
	var n int64
	filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func benchFormat(b *testing.B, name, ckpt string, write func(string, ir.Config, int64, ir.DType) error) {
	if testing.Short() {
		b.Skip("end-to-end benchmark on a 5 GB synthetic model; not in -short")
	}
	tmp := b.TempDir()
	bin := buildBinary(b, tmp)
	dir, src := syntheticFormat(b, name, ckpt, write)
	out := filepath.Join(tmp, "out.gguf")
	runBench(b, bin, out, []string{"convert", "-q", src,
		"--config", filepath.Join(dir, "config.json"), "--tokenizer", filepath.Join(dir, "tokenizer.model"), "-o", out})
	largest := float64(largestTensorBytes(testmodel.Gemma2BConfig())) / (1 << 20)
	b.ReportMetric(largest, "largest-tensor-MiB")
	b.ReportMetric(float64(diskBytes(src))/(1<<20), "in-MiB")
	// The three formats hold the same weights and the same source name
	// (gemma2b), so their GGUFs should be byte-identical: print a digest
	// to compare.
	f, err := os.Open(out)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "%s: largest tensor %.0f MiB, input %.0f MiB, output sha256 %x\n",
		b.Name(), largest, float64(diskBytes(src))/(1<<20), h.Sum(nil))
}

// BenchmarkConvertPyTorch2B converts a gemma_pytorch .ckpt (torch.save
// zip, fused qkv_proj) of the synthetic bf16 Gemma 2B.
func BenchmarkConvertPyTorch2B(b *testing.B) {
	benchFormat(b, "pytorch", "gemma2b.ckpt", testmodel.WritePyTorchCkpt)
}

// BenchmarkConvertFlax2B converts a flax msgpack parameter tree (einsum
// layouts, transposed lazily by the reader) of the synthetic model.
func BenchmarkConvertFlax2B(b *testing.B) {
	benchFormat(b, "flax", "gemma2b.msgpack", testmodel.WriteFlaxMsgpack)
}

// BenchmarkConvertOrbax2B converts an Orbax checkpoint (per-array zarr v2,
// zstd chunks of ~4 MiB, no OCDBT) of the synthetic model.
func BenchmarkConvertOrbax2B(b *testing.B) {
	benchFormat(b, "orbax", "gemma2b", testmodel.WriteOrbaxZarr)
}

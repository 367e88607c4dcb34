// Package bench holds end-to-end benchmarks that run the gemmaconv binary
// on synthetic Gemma-2B-shaped checkpoints and report wall time and the
// child process's peak RSS — the figures users see. They are skipped by
// plain `go test`; run them with
//
//	go test ./bench -run '^$' -bench . -benchtime 1x -timeout 2h
//
// The synthetic model (~5 GB bf16) is generated once into
// $GEMMACONV_BENCH_DIR (default: the OS temp dir) and reused.
package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gemmaconv/gemmaconv/internal/testmodel"
	"github.com/gemmaconv/gemmaconv/ir"
)

// buildBinary compiles cmd/gemmaconv into dir and returns its path.
func buildBinary(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "gemmaconv")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/gemmaconv")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("building gemmaconv: %v", err)
	}
	return bin
}

// gemma2B returns the directory of the synthetic Gemma-2B-shaped bf16
// checkpoint, writing it on first use.
func gemma2B(b *testing.B) string {
	b.Helper()
	root := os.Getenv("GEMMACONV_BENCH_DIR")
	if root == "" {
		root = os.TempDir()
	}
	dir := filepath.Join(root, "gemmaconv-bench-gemma2b-bf16")
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	start := time.Now()
	if err := testmodel.WriteHF(dir, testmodel.Gemma2BConfig(), 1, ir.BF16); err != nil {
		b.Fatalf("writing synthetic model: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %s in %s", dir, time.Since(start).Round(time.Second))
	return dir
}

// runMeasured runs the binary and returns wall time and peak RSS in bytes.
func runMeasured(b *testing.B, bin string, args ...string) (time.Duration, int64) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("gemmaconv %v: %v", args, err)
	}
	wall := time.Since(start)
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Fatal("no rusage for the child process")
	}
	return wall, ru.Maxrss * 1024 // Linux reports kilobytes
}

func benchCLI(b *testing.B, args func(src, out string) []string) {
	if testing.Short() {
		b.Skip("end-to-end benchmark on a 5 GB synthetic model; not in -short")
	}
	tmp := b.TempDir()
	bin := buildBinary(b, tmp)
	src := gemma2B(b)
	out := filepath.Join(tmp, "out.gguf")
	runBench(b, bin, out, args(src, out))
}

// runBench runs the binary with args b.N times, out being the file it
// writes, and reports wall time, peak RSS and the output's size.
func runBench(b *testing.B, bin, out string, args []string) {
	b.ResetTimer()
	var wall time.Duration
	var rss int64
	for i := 0; i < b.N; i++ {
		w, r := runMeasured(b, bin, args...)
		wall += w
		rss = max(rss, r)
		if i+1 < b.N {
			os.Remove(out)
		}
	}
	b.StopTimer()
	st, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(wall.Seconds()/float64(b.N), "s/op-wall")
	b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(st.Size())/(1<<20), "out-MiB")
	fmt.Fprintf(os.Stderr, "%s: wall %.1fs, peak RSS %.0f MiB, output %.0f MiB\n",
		b.Name(), wall.Seconds()/float64(b.N), float64(rss)/(1<<20), float64(st.Size())/(1<<20))
}

// BenchmarkConvertGemma2B converts the synthetic bf16 checkpoint to a bf16
// GGUF (issue: peak RSS must stay under 1 GiB).
func BenchmarkConvertGemma2B(b *testing.B) {
	benchCLI(b, func(src, out string) []string { return []string{"convert", "-q", src, "-o", out} })
}

// BenchmarkConvertGemma2BF32 converts to f32 (twice the output bytes).
func BenchmarkConvertGemma2BF32(b *testing.B) {
	benchCLI(b, func(src, out string) []string {
		return []string{"convert", "-q", src, "-o", out, "--outtype", "f32"}
	})
}

// BenchmarkQuantizeGemma2BQ4KM quantizes to Q4_K_M with all cores.
func BenchmarkQuantizeGemma2BQ4KM(b *testing.B) {
	benchCLI(b, func(src, out string) []string {
		return []string{"quantize", "-q", src, "-o", out, "--type", "Q4_K_M", "--no-source-hash"}
	})
}

// BenchmarkQuantizeGemma2BQ8_0 quantizes to Q8_0 with all cores.
func BenchmarkQuantizeGemma2BQ8_0(b *testing.B) {
	benchCLI(b, func(src, out string) []string {
		return []string{"quantize", "-q", src, "-o", out, "--type", "Q8_0", "--no-source-hash"}
	})
}

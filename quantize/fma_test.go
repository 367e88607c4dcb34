package quantize

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// TestNoFusedMultiplyAdd compiles this package for arm64, where the Go
// compiler fuses x*y+z into one instruction unless the product is
// explicitly converted, and fails if any fused multiply-add survives:
// ggml's reference quantizers round every product, so a fused one changes
// bits on arm64 while amd64 (which does not fuse by default) still passes
// the vector tests. Wrap the product as float32(x*y) to fix a report.
func TestNoFusedMultiplyAdd(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the package for arm64; skipped in -short mode")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found: ", err)
	}
	cmd := exec.Command(goTool, "build", "-gcflags=-S", ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build for arm64: %v\n%s", err, out)
	}
	fused := regexp.MustCompile(`\((\S+\.go:\d+)\)\s+(F(N?)M(ADD|SUB)[SD])\s`)
	if !bytes.Contains(out, []byte(" STEXT ")) {
		t.Fatalf("go build -gcflags=-S printed no assembly listing:\n%.2000s", out)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		if m := fused.FindStringSubmatch(sc.Text()); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			t.Errorf("%s: fused %s; round the product with float32(...) as ggml does", m[1], m[2])
		}
	}
}

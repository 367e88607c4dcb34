package gguf

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/gemmaconv/gemmaconv/ir"
)

func TestZZMutate(t *testing.T) {
	dir := t.TempDir()
	tiny := filepath.Join(dir, "tiny.gguf")
	Write(tiny, tinyModel(tinyConfig(ir.Gemma3), true), WriteOptions{})
	b, _ := os.ReadFile(tiny)
	f0, _ := Parse("x", b)
	hdr := int(f0.DataOffset)
	r := rand.New(rand.NewSource(2))
	ok, models := 0, 0
	for i := 0; i < 100000; i++ {
		d := append([]byte(nil), b...)
		for k := 0; k < 1+r.Intn(3); k++ {
			pos := r.Intn(hdr)
			switch r.Intn(3) {
			case 0:
				d[pos] = byte(r.Intn(256))
			case 1:
				d[pos] ^= 1 << r.Intn(8)
			case 2:
				d[pos] = []byte{0, 1, 0xff, 2, 3, 4, 8, 9, 12}[r.Intn(9)]
			}
		}
		f, err := Parse("x", d)
		if err != nil {
			continue
		}
		ok++
		if m, err := modelFromFile(f); err == nil {
			models++
			Metadata(m)
		}
	}
	t.Logf("parsed %d, models %d", ok, models)
}

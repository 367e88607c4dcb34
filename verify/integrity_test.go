package verify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/edge"
	_ "github.com/gemmaconv/gemmaconv/formats/safetensors"
	"github.com/gemmaconv/gemmaconv/ir"
)

// TestIntegrityCheck writes a bundle (a format with per-tensor checksums)
// of the bundled example model, then flips one data byte: verify must pass
// the first and fail the second on the integrity check, naming a tensor.
func TestIntegrityCheck(t *testing.T) {
	src, err := ir.Open("../goldens/gemma3-tiny/hf", ir.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "m.gcvb")
	if err := edge.Write(path, src, edge.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	run := func() *Report {
		t.Helper()
		m, err := ir.Open(path, ir.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		r, err := Run(m, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := run(); r.Integrity == nil || !r.Integrity.Passed || !r.Passed {
		t.Fatalf("intact bundle: integrity %+v, passed %v, failures %v", r.Integrity, r.Passed, r.Failures)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-100] ^= 0x40 // inside the last tensor's data
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := run()
	if r.Passed || r.Integrity == nil || r.Integrity.Passed {
		t.Fatalf("corrupted bundle passed: %+v", r.Integrity)
	}
	if !strings.Contains(r.Integrity.Error, "weight") || r.Failures[0].Check != "integrity" {
		t.Errorf("failure does not name the tensor: %v", r.Failures)
	}
}

package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/gemmaconv/gemmaconv/formats/edge"
	"github.com/gemmaconv/gemmaconv/ir"
)

func TestBundleCmd(t *testing.T) {
	dir := t.TempDir()
	plain, q8 := filepath.Join(dir, "tiny.gcvb"), filepath.Join(dir, "tiny-q8.gcvb")
	if _, err := runCLI(t, "bundle", "-q", "../../goldens/gemma3-tiny/hf", "-o", plain); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "bundle", "-q", "../../goldens/gemma3-tiny/hf", "-o", q8, "--type", "Q8_0"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{plain: "BF16", q8: "Q8_0"} {
		if err := edge.Verify(path); err != nil {
			t.Fatal(err)
		}
		stdout, err := runCLI(t, "inspect", "--json", path)
		if err != nil {
			t.Fatal(err)
		}
		var s ir.Summary
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Fatal(err)
		}
		if s.Format != "bundle" || s.TypeCounts[want] == 0 {
			t.Errorf("%s: format %q, types %v (want some %s)", path, s.Format, s.TypeCounts, want)
		}
	}
	for name, args := range map[string][]string{
		"no output": {"bundle", "-q", "../../goldens/gemma3-tiny/hf"},
		"bad type":  {"bundle", "-q", "../../goldens/gemma3-tiny/hf", "-o", filepath.Join(dir, "x.gcvb"), "--type", "Q9"},
		"same file": {"bundle", "-q", plain, "-o", plain},
	} {
		_, err := runCLI(t, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%s: %v, want exit status 2", name, err)
		}
	}
}

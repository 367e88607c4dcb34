package orbax

import (
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const goldens = "../../../goldens/jax/orbax"

// checkpoints lists every checkpoint directory under root: the leaves of
// the <version>/<layout>/<group>/<case> hierarchy.
func checkpoints(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, v := range []string{"v0_checkpoints", "v1_checkpoints"} {
		cases, _ := filepath.Glob(filepath.Join(root, v, "*", "*", "*"))
		out = append(out, cases...)
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatalf("no checkpoints under %s", root)
	}
	return out
}

func int32s(t *testing.T, a *Array) []int32 {
	t.Helper()
	if a.DType().String() != "int32" {
		t.Fatalf("%s: dtype %s", a.Name, a.DType())
	}
	b := make([]byte, a.Size())
	if _, err := a.ReadAt(b, 0); err != nil {
		t.Fatalf("%s: %v", a.Name, err)
	}
	out := make([]int32, len(b)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func checkAll(t *testing.T, root string) {
	for _, dir := range checkpoints(t, root) {
		rel, _ := filepath.Rel(root, dir)
		t.Run(rel, func(t *testing.T) {
			c, err := Open(dir)
			critical := strings.Contains("/"+filepath.ToSlash(rel), "/critical_metadata_alterations/")
			if critical {
				if err == nil {
					c.Close()
					t.Fatal("opened a checkpoint whose data was deleted")
				}
				what := "d/"
				if strings.HasSuffix(rel, "manifest.ocdbt") {
					what = "manifest.ocdbt is missing"
				}
				if !strings.Contains(err.Error(), what) {
					t.Errorf("error does not name %q: %v", what, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if strings.HasSuffix(rel, "deleted_checkpointable") {
				if len(c.Items) != 0 || !strings.Contains(strings.Join(c.Warnings, "\n"), `"state"`) {
					t.Errorf("items %d, warnings %q", len(c.Items), c.Warnings)
				}
				if _, err := c.Tree(); err == nil {
					t.Error("Tree() succeeded without a tree")
				}
				return
			}
			if strings.HasSuffix(rel, "dummy_checkpointable_added") && !strings.Contains(strings.Join(c.Warnings, "\n"), "dummy/") {
				t.Errorf("stray dummy/ not reported: %q", c.Warnings)
			}
			it, err := c.Tree()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(rel, "composite") != (it.Name == "state") {
				t.Errorf("item %q", it.Name)
			}
			got := map[string][]int32{}
			var names []string
			for _, a := range it.Arrays {
				got[strings.Join(a.KeyPath, "/")] = int32s(t, a)
				names = append(names, a.Name)
			}
			want := map[string][]int32{"a": {0, 1, 2, 3, 4, 5, 6, 7}, "b/c": {1, 2, 3}}
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(names, []string{"a", "b.c"}) {
				t.Errorf("tree %v (%q), want %v", got, names, want)
			}
			if it.UseZarr3 != strings.HasPrefix(rel, "v1") && !strings.Contains(rel, "missing_metadata") {
				t.Errorf("use_zarr3 = %v", it.UseZarr3)
			}
			for _, a := range it.Arrays {
				if a.Meta.ZarrFormat == 3 != strings.HasPrefix(rel, "v1") {
					t.Errorf("%s: zarr v%d", a.Name, a.Meta.ZarrFormat)
				}
			}
		})
	}
}

func TestGoldenCheckpoints(t *testing.T) { checkAll(t, goldens) }

func TestAllFixtureCheckpoints(t *testing.T) {
	fx := os.Getenv("GEMMACONV_FIXTURES")
	if fx == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the full set of Orbax compatibility checkpoints lives in shared/fixtures/orbax-real")
	}
	checkAll(t, filepath.Join(fx, "orbax-real", "orbax"))
}

func TestIsCheckpoint(t *testing.T) {
	for _, dir := range checkpoints(t, goldens) {
		if !IsCheckpoint(dir) {
			t.Errorf("%s not detected", dir)
		}
	}
	if IsCheckpoint(t.TempDir()) || IsCheckpoint("orbax.go") {
		t.Error("false positive")
	}
}

// TestCorruptCheckpoint: a flipped byte in the merged manifest or in a
// B+tree node is a checksum error, not a panic.
func TestCorruptCheckpoint(t *testing.T) {
	src := filepath.Join(goldens, "v0_checkpoints/direct_checkpoint/checkpoint_metadata_present/pytree_checkpointable_has_metadata")
	for _, target := range []string{"manifest.ocdbt", "d"} {
		dir := t.TempDir()
		copyTree(t, src, dir)
		p := filepath.Join(dir, target)
		if target == "d" {
			ents, _ := os.ReadDir(p)
			p = filepath.Join(p, ents[0].Name())
		}
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x40
		os.WriteFile(p, b, 0o644)
		_, err := Open(dir)
		if err == nil || !strings.Contains(err.Error(), "CRC-32C") {
			t.Errorf("%s corrupted: %v", target, err)
		}
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

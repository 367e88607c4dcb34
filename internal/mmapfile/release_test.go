package mmapfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCoveringPages(t *testing.T) {
	const ps = 4096
	for _, c := range []struct{ off, n, limit, start, end int64 }{
		{0, 1, 3 * ps, 0, ps},
		{1, ps, 3 * ps, 0, 2 * ps},
		{ps, ps, 3 * ps, ps, 2 * ps},
		{ps + 10, 20, 3 * ps, ps, 2 * ps},
		{2*ps + 5, ps, 2*ps + 100, 2 * ps, 2*ps + 100}, // clipped to the mapping
		{0, 0, ps, 0, 0},
		{-1, 10, ps, 0, 0},
		{ps, 1, ps, 0, 0},
	} {
		s, e := coveringPages(c.off, c.n, ps, c.limit)
		if e <= s && c.end <= c.start {
			continue
		}
		if s != c.start || e != c.end {
			t.Errorf("coveringPages(%d, %d, limit %d) = [%d, %d), want [%d, %d)", c.off, c.n, c.limit, s, e, c.start, c.end)
		}
	}
}

func TestWithinPages(t *testing.T) {
	const ps = 4096
	for _, c := range []struct{ off, n, limit, start, end int64 }{
		{0, ps, 3 * ps, 0, ps},
		{1, ps, 3 * ps, 0, 0}, // no whole page inside
		{1, 2 * ps, 3 * ps, ps, 2 * ps},
		{ps, 2 * ps, 3 * ps, ps, 3 * ps},
		{ps, 5 * ps, 3 * ps, ps, 3 * ps}, // clipped to the mapping
		{0, 0, ps, 0, 0},
		{-1, 10, ps, 0, 0},
	} {
		s, e := withinPages(c.off, c.n, ps, c.limit)
		if e <= s && c.end <= c.start {
			continue
		}
		if s != c.start || e != c.end {
			t.Errorf("withinPages(%d, %d, limit %d) = [%d, %d), want [%d, %d)", c.off, c.n, c.limit, s, e, c.start, c.end)
		}
	}
}

// TestReleaseKeepsContents drops pages of a real mapping (where mapping is
// supported) and checks the bytes read back unchanged.
func TestReleaseKeepsContents(t *testing.T) {
	ps := os.Getpagesize()
	want := make([]byte, 3*ps+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	data, err := Map(fh, int64(len(want)))
	if err != nil {
		t.Skipf("no mmap here: %v", err)
	}
	defer Unmap(data)
	ReleaseCovering(data, 10, int64(ps))
	ReleaseWithin(data, 1, int64(2*ps))
	ReleaseCovering(data, 0, int64(len(data))+100)
	ReleaseWithin(data, -1, 5)
	if string(data) != string(want) {
		t.Error("contents changed after release")
	}
}

package zarr

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestDecodeExactSize: a chunk of known size is decoded into a buffer of
// exactly that size (what the chunk cache accounts for); chunks that
// decode to fewer or more bytes are errors; pooled zstd decoders keep
// working after a corrupt chunk.
func TestDecodeExactSize(t *testing.T) {
	want := make([]byte, 5000)
	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	for _, codec := range []string{"zstd", "gzip", "zlib"} {
		for round := 0; round < 3; round++ {
			enc := compress(t, codec, want)
			r, held, err := decodeBytes(bytes.NewReader(enc), []Codec{{Name: codec}}, int64(len(want)), "k")
			if err != nil {
				t.Fatalf("%s: %v", codec, err)
			}
			br, ok := r.(*bytes.Reader)
			if !ok || held != int64(len(want)) {
				t.Fatalf("%s: %T holding %d", codec, r, held)
			}
			got, _ := io.ReadAll(io.NewSectionReader(br, 0, br.Size()))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: decoded bytes differ", codec)
			}
			for _, c := range []struct {
				size int64
				msg  string
			}{{int64(len(want)) + 1, "bytes, want"}, {int64(len(want)) - 1, "decodes to more than"}} {
				_, _, err := decodeBytes(bytes.NewReader(enc), []Codec{{Name: codec}}, c.size, "k")
				if err == nil || !strings.Contains(err.Error(), c.msg) {
					t.Errorf("%s: want %d bytes: got %v, want %q", codec, c.size, err, c.msg)
				}
			}
			// A corrupt chunk fails; the next good one still decodes.
			bad := append([]byte(nil), enc...)
			bad = bad[:len(bad)/2]
			if _, _, err := decodeBytes(bytes.NewReader(bad), []Codec{{Name: codec}}, int64(len(want)), "k"); err == nil {
				t.Errorf("%s: truncated chunk decoded", codec)
			}
		}
	}
}

// TestDecodeExactGrows: a chunk that compresses far below its size starts
// in a buffer sized by its encoded bytes and grows to exactly its size.
func TestDecodeExactGrows(t *testing.T) {
	want := bytes.Repeat([]byte{0, 1, 2, 3}, 3<<18) // 3 MiB
	for _, codec := range []string{"zstd", "gzip"} {
		enc := compress(t, codec, want)
		r, held, err := decodeBytes(bytes.NewReader(enc), []Codec{{Name: codec}}, int64(len(want)), "k")
		if err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		br := r.(*bytes.Reader)
		got := make([]byte, br.Size())
		br.ReadAt(got, 0)
		if held != int64(len(want)) || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes held, equal %v", codec, held, bytes.Equal(got, want))
		}
	}
}

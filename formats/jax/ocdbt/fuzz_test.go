package ocdbt

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// frame wraps payload (version, compression, body) in a valid envelope —
// magic, length and CRC-32C — so that fuzzing reaches the body decoders
// instead of stopping at the checksum.
func frame(magic uint32, payload []byte) []byte {
	b := make([]byte, 12, 16+len(payload))
	binary.BigEndian.PutUint32(b, magic)
	binary.LittleEndian.PutUint64(b[4:], uint64(16+len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// seeds returns the payloads of the golden manifests and root nodes.
func seeds(f *testing.F) (manifests, nodes [][]byte) {
	dirs, _ := filepath.Glob(filepath.Join(goldens, "ocdbt", "*.ocdbt"))
	for _, dir := range dirs {
		man, err := os.ReadFile(filepath.Join(dir, "manifest.ocdbt"))
		if err != nil {
			f.Fatal(err)
		}
		manifests = append(manifests, man[12:len(man)-4])
		db, err := Open(dir)
		if err != nil {
			f.Fatal(err)
		}
		root := db.Version().Root
		data, err := db.readRef(root, 1<<20, "root")
		db.Close()
		if err != nil {
			f.Fatal(err)
		}
		nodes = append(nodes, data[12:len(data)-4])
	}
	return manifests, nodes
}

func FuzzManifest(f *testing.F) {
	manifests, _ := seeds(f)
	for _, m := range manifests {
		f.Add(m)
	}
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeManifest(frame(manifestMagic, payload), "fuzz")
		if err == nil && m.Config.ManifestKind == 0 && len(m.Versions) == 0 {
			t.Fatal("single-file manifest without versions accepted")
		}
		// The unframed bytes must fail cleanly too.
		DecodeManifest(payload, "fuzz")
	})
}

func FuzzBtreeNode(f *testing.F) {
	_, nodes := seeds(f)
	for _, n := range nodes {
		f.Add(n)
	}
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, payload []byte) {
		nd, err := decodeNode(frame(btreeNodeMagic, payload), Ref{File: DataFileID{BasePath: "x/", RelativePath: "d/y"}})
		if err != nil {
			return
		}
		if len(nd.keys) == 0 {
			t.Fatal("empty node accepted")
		}
		for i := 1; i < len(nd.keys); i++ {
			if nd.keys[i] <= nd.keys[i-1] {
				t.Fatalf("keys out of order: %q", nd.keys)
			}
		}
		if nd.height > 0 && len(nd.children) != len(nd.keys) {
			t.Fatal("children/keys mismatch")
		}
	})
}

func FuzzVersionNode(f *testing.F) {
	f.Add([]byte{0, 0, 4, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 1, 4, 1, 0, 1, 16, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, payload []byte) {
		DecodeVersionNode(frame(versionNodeMagic, payload), Ref{})
	})
}

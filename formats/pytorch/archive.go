package pytorch

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"sort"
	"strings"
	"sync"
)

// Checkpoint is an open torch.save file: the unpickled object and lazy
// references to its storages. Tensor data stays in the file until read.
type Checkpoint struct {
	// Path is the file's path as given to OpenCheckpoint.
	Path string
	// Format is "zip" (torch.save since PyTorch 1.6) or "legacy" (the
	// earlier pickle stream with raw storages appended).
	Format string
	// Root is the unpickled object, usually a *Dict.
	Root any
	// Storages lists the storages the pickle referenced, in first-use order.
	Storages []*Storage
	// Notes records anything unusual the reader accepted.
	Notes []string

	f *os.File
}

// Close releases the file.
func (c *Checkpoint) Close() error {
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// MaxPickleSize is the largest data.pkl accepted. A state dict's pickle
// holds names, shapes and storage keys only: a few hundred KiB for the
// largest models.
const MaxPickleSize = 256 << 20

// maxZipRatio bounds the expansion of a compressed entry. DEFLATE cannot
// exceed about 1032:1; a larger declared ratio is a zip bomb.
const maxZipRatio = 1100

// legacyMagic is torch.serialization.MAGIC_NUMBER, the first pickle of a
// legacy checkpoint.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// sniff classifies a file by its first bytes: "zip", "legacy", "tar" or "".
// A legacy checkpoint is recognized by unpickling its first pickle (a few
// bytes, with tight limits) and finding torch's magic number.
func sniff(f io.ReaderAt, size int64) string {
	var head [512]byte
	n, _ := f.ReadAt(head[:], 0)
	h := head[:n]
	switch {
	case bytes.HasPrefix(h, []byte("PK\x03\x04")) || bytes.HasPrefix(h, []byte("PK\x05\x06")):
		return "zip"
	case len(h) >= 262 && string(h[257:262]) == "ustar":
		return "tar"
	case len(h) > 0:
		tiny := Limits{MaxObjects: 16, MaxStack: 16, MaxMarks: 4, MaxMemo: 4, MaxBytes: 64}
		v, _, err := Unpickle(bytesReaderAt(h), 0, int64(len(h)), UnpickleOptions{Limits: tiny})
		if err == nil && bigEqual(v, legacyMagic) {
			return "legacy"
		}
	}
	return ""
}

// OpenCheckpoint opens a torch.save file in the zip or the legacy format
// and unpickles its object with the allowlisting unpickler. Storages are
// located and size-checked but not read.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	return openCheckpoint(path, DefaultLimits)
}

func openCheckpoint(path string, lim Limits) (*Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s: is a directory, not a torch.save file", path)
	}
	c := &Checkpoint{Path: path, f: f}
	switch sniff(f, st.Size()) {
	case "zip":
		c.Format = "zip"
		err = c.openZip(f, st.Size(), lim)
	case "legacy":
		c.Format = "legacy"
		err = c.openLegacy(f, st.Size(), lim)
	case "tar":
		err = errors.New("a tar checkpoint (PyTorch before 0.4) is not supported; re-save it with a current torch.save")
	default:
		err = errors.New("not a torch.save file (neither a zip archive nor a legacy pickle with torch's magic number)")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func (c *Checkpoint) openZip(f *os.File, size int64, lim Limits) error {
	zr, err := zip.NewReader(f, size)
	if err != nil {
		if errors.Is(err, zip.ErrInsecurePath) {
			return fmt.Errorf("zip archive has an entry with an unsafe path: %w", err)
		}
		return fmt.Errorf("reading zip directory: %w", err)
	}
	var pkl *zip.File
	entries := map[string]*zip.File{}
	for _, zf := range zr.File {
		if _, dup := entries[zf.Name]; dup {
			return fmt.Errorf("zip entry %s appears twice", quoteName(zf.Name))
		}
		entries[zf.Name] = zf
		dir, base, ok := strings.Cut(zf.Name, "/")
		if ok && base == "data.pkl" && dir != "" {
			if pkl != nil {
				return fmt.Errorf("zip archive has two pickles (%s and %s)", quoteName(pkl.Name), quoteName(zf.Name))
			}
			pkl = zf
		}
	}
	if pkl == nil {
		for name := range entries {
			if strings.HasSuffix(name, "/constants.pkl") || strings.Contains(name, "/code/") {
				return errors.New("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
			}
		}
		return errors.New("zip archive has no <dir>/data.pkl: not a torch.save checkpoint")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo := entries[prefix+"byteorder"]; bo != nil {
		b, err := readSmallEntry(bo, 16)
		if err != nil {
			return err
		}
		if s := strings.TrimSpace(string(b)); s != "little" {
			return fmt.Errorf("%s says %q: only little-endian checkpoints are supported", bo.Name, s)
		}
	}
	if ver := entries[prefix+"version"]; ver != nil {
		b, err := readSmallEntry(ver, 64)
		if err != nil {
			return err
		}
		c.Notes = append(c.Notes, fmt.Sprintf("torch zip archive, serialization version %s", strings.TrimSpace(string(b))))
	}

	// The pickle: a window of the file when stored, else decompressed with
	// a cap.
	if pkl.UncompressedSize64 > MaxPickleSize {
		return fmt.Errorf("%s is %d bytes, larger than the %d-byte limit for a state-dict pickle", pkl.Name, pkl.UncompressedSize64, MaxPickleSize)
	}
	var pr io.ReaderAt
	psize := int64(pkl.UncompressedSize64)
	if pkl.Method == zip.Store {
		sec, err := storedSection(f, size, pkl)
		if err != nil {
			return err
		}
		pr = sec
	} else {
		if err := checkRatio(pkl); err != nil {
			return err
		}
		rc, err := pkl.Open()
		if err != nil {
			return fmt.Errorf("%s: %w", pkl.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, psize+1))
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", pkl.Name, err)
		}
		if int64(len(b)) != psize {
			return fmt.Errorf("%s: decompressed to %d bytes, the directory says %d", pkl.Name, len(b), psize)
		}
		pr = bytes.NewReader(b)
	}
	table := newStorageTable(false)
	root, n, err := Unpickle(pr, 0, psize, UnpickleOptions{Limits: lim, Persistent: table.load})
	if err != nil {
		return fmt.Errorf("%s: %w", pkl.Name, err)
	}
	if n != psize {
		c.Notes = append(c.Notes, fmt.Sprintf("%s: %d bytes after the pickle's STOP ignored", pkl.Name, psize-n))
	}
	c.Root = root
	c.Storages = table.order
	for _, s := range table.order {
		name := prefix + "data/" + s.Key
		zf := entries[name]
		if zf == nil {
			return fmt.Errorf("storage %s: zip entry %s is missing", quoteName(s.Key), quoteName(name))
		}
		if int64(zf.UncompressedSize64) != s.NBytes() || zf.UncompressedSize64 > 1<<62 {
			return fmt.Errorf("storage %s: zip entry %s holds %d bytes, but %d elements of %s need %d",
				quoteName(s.Key), quoteName(name), zf.UncompressedSize64, s.Numel, s.Type, s.NBytes())
		}
		if zf.Method == zip.Store {
			sec, err := storedSection(f, size, zf)
			if err != nil {
				return err
			}
			s.src = sec
			continue
		}
		if err := checkRatio(zf); err != nil {
			return err
		}
		s.src = &zipStream{zf: zf, size: s.NBytes()}
		c.Notes = append(c.Notes, fmt.Sprintf("storage %s is compressed in the archive; reading it decompresses", s.Key))
	}
	return nil
}

// storedSection returns the bytes of an uncompressed entry as a window of
// the file, after checking that the window lies inside it.
func storedSection(f io.ReaderAt, size int64, zf *zip.File) (*io.SectionReader, error) {
	if zf.CompressedSize64 != zf.UncompressedSize64 {
		return nil, fmt.Errorf("zip entry %s is stored with %d compressed and %d uncompressed bytes", quoteName(zf.Name), zf.CompressedSize64, zf.UncompressedSize64)
	}
	off, err := zf.DataOffset()
	if err != nil {
		return nil, fmt.Errorf("zip entry %s: %w", quoteName(zf.Name), err)
	}
	n := int64(zf.UncompressedSize64)
	if off < 0 || n < 0 || off > size || n > size-off {
		return nil, fmt.Errorf("zip entry %s: %d bytes at offset %d run past the end of the %d-byte file (truncated?)", quoteName(zf.Name), n, off, size)
	}
	return io.NewSectionReader(f, off, n), nil
}

func checkRatio(zf *zip.File) error {
	if zf.Method != zip.Deflate {
		return fmt.Errorf("zip entry %s uses compression method %d; only stored and deflated entries are supported", quoteName(zf.Name), zf.Method)
	}
	if zf.UncompressedSize64 > zf.CompressedSize64*maxZipRatio+1024 {
		return fmt.Errorf("zip entry %s claims %d bytes from %d compressed (ratio beyond %d:1): refusing a zip bomb",
			quoteName(zf.Name), zf.UncompressedSize64, zf.CompressedSize64, maxZipRatio)
	}
	return nil
}

func readSmallEntry(zf *zip.File, max int64) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(max) {
		return nil, fmt.Errorf("zip entry %s is %d bytes (expected at most %d)", quoteName(zf.Name), zf.UncompressedSize64, max)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("zip entry %s: %w", quoteName(zf.Name), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, fmt.Errorf("zip entry %s: %w", quoteName(zf.Name), err)
	}
	return b, nil
}

// zipStream reads a compressed entry lazily. Forward reads continue the
// decompression; a read behind the current position starts it again.
// The stream never yields more than the entry's declared size (the stdlib
// reader also fails the entry if it inflates past it or its CRC is wrong).
type zipStream struct {
	zf   *zip.File
	size int64

	mu  sync.Mutex
	rc  io.ReadCloser
	pos int64
}

func (z *zipStream) ReadAt(p []byte, off int64) (int, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= z.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	if z.rc == nil || off < z.pos {
		if z.rc != nil {
			z.rc.Close()
		}
		rc, err := z.zf.Open()
		if err != nil {
			return 0, fmt.Errorf("zip entry %s: %w", quoteName(z.zf.Name), err)
		}
		z.rc, z.pos = rc, 0
	}
	if off > z.pos {
		if _, err := io.CopyN(io.Discard, z.rc, off-z.pos); err != nil {
			z.rc.Close()
			z.rc = nil
			return 0, fmt.Errorf("zip entry %s: %w", quoteName(z.zf.Name), err)
		}
		z.pos = off
	}
	want := p
	if int64(len(want)) > z.size-off {
		want = want[:z.size-off]
	}
	n, err := io.ReadFull(z.rc, want)
	z.pos += int64(n)
	if err != nil {
		z.rc.Close()
		z.rc = nil
		return n, fmt.Errorf("zip entry %s: %w", quoteName(z.zf.Name), err)
	}
	if z.pos == z.size {
		// The stream must end here: this also makes the zip reader check
		// the CRC. An entry that inflates further is a bomb or corrupt.
		var one [1]byte
		k, err := z.rc.Read(one[:])
		z.rc.Close()
		z.rc = nil
		if k > 0 || (err != nil && err != io.EOF) {
			if err == nil {
				err = errors.New("more data than declared")
			}
			return 0, fmt.Errorf("zip entry %s does not end at its declared %d bytes: %w", quoteName(z.zf.Name), z.size, err)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// openLegacy reads the pre-1.6 format: pickles of the magic number, the
// protocol version and sys_info, the object pickle, the sorted storage key
// list, then each storage as an 8-byte element count and its raw bytes.
func (c *Checkpoint) openLegacy(f *os.File, size int64, lim Limits) error {
	opts := UnpickleOptions{Limits: lim}
	off := int64(0)
	next := func(what string, o UnpickleOptions) (any, error) {
		v, n, err := Unpickle(f, off, size, o)
		if err != nil {
			return nil, fmt.Errorf("%s pickle at byte %d: %w", what, off, err)
		}
		off += n
		return v, nil
	}
	magic, err := next("magic number", opts)
	if err != nil {
		return err
	}
	if !bigEqual(magic, legacyMagic) {
		return fmt.Errorf("legacy pickle starts with %s, not torch's magic number", describe(magic))
	}
	proto, err := next("protocol version", opts)
	if err != nil {
		return err
	}
	if p, ok := proto.(int64); !ok || p != 1001 {
		return fmt.Errorf("legacy protocol version %s is not 1001", describe(proto))
	}
	sys, err := next("sys_info", opts)
	if err != nil {
		return err
	}
	if d, ok := sys.(*Dict); ok {
		if le, ok := d.Get("little_endian"); ok && le != true {
			return errors.New("checkpoint was written on a big-endian machine; only little-endian is supported")
		}
	}
	table := newStorageTable(true)
	objOff := off
	root, err := next("object", UnpickleOptions{Limits: lim, Persistent: table.load})
	if err != nil {
		return err
	}
	c.Root = root
	c.Storages = table.order
	keysV, err := next("storage key list", opts)
	if err != nil {
		return err
	}
	keys, ok := keysV.(*List)
	if !ok {
		return fmt.Errorf("storage key list at byte %d is a %s", objOff, typeName(keysV))
	}
	for i, kv := range keys.Items {
		key, ok := pyStr(kv)
		if !ok {
			return fmt.Errorf("storage key %d is a %s", i, typeName(kv))
		}
		s := table.byKey[key]
		if s == nil {
			return fmt.Errorf("storage key %s at byte %d was not referenced by the pickle", quoteName(key), off)
		}
		if s.src != nil {
			return fmt.Errorf("storage key %s is listed twice", quoteName(key))
		}
		var hdr [8]byte
		if size-off < 8 {
			return fmt.Errorf("storage %s: header at byte %d runs past the end of the %d-byte file (truncated?)", quoteName(key), off, size)
		}
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return fmt.Errorf("storage %s: reading header at byte %d: %w", quoteName(key), off, err)
		}
		numel := int64(binary.LittleEndian.Uint64(hdr[:]))
		if numel != s.Numel {
			return fmt.Errorf("storage %s: header at byte %d says %d elements, the pickle says %d", quoteName(key), off, uint64(numel), s.Numel)
		}
		n := s.NBytes()
		if n > size-off-8 {
			return fmt.Errorf("storage %s: %d bytes at byte %d run past the end of the %d-byte file (truncated?)", quoteName(key), n, off+8, size)
		}
		s.src = io.NewSectionReader(f, off+8, n)
		off += 8 + n
	}
	missing := []string{}
	for _, s := range table.order {
		if s.src == nil {
			missing = append(missing, s.Key)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("storages %v are referenced but have no data in the file", missing)
	}
	if off != size {
		c.Notes = append(c.Notes, fmt.Sprintf("%d bytes after the last storage ignored", size-off))
	}
	return nil
}

// NamedTensor is a tensor with its dotted state-dict name.
type NamedTensor struct {
	Name string
	*TensorRef
}

// maxFlattenDepth bounds how deep Flatten descends into nested dicts (a
// hostile pickle can make a dict contain itself); maxFlattenEntries bounds
// the entries it visits (memo references let a small pickle share one
// dict under exponentially many paths).
const (
	maxFlattenDepth     = 8
	maxFlattenEntries   = 1 << 21
	maxFlattenNameBytes = 64 << 20
)

// Flatten lists the tensors under v, a state dict or a dict of them
// ({'model_state_dict': {...}}), with dotted names ("model_state_dict.
// embedder.weight"), in the file's order. Entries that are neither tensors
// nor dicts are returned by name in skipped.
func Flatten(v any) (tensors []NamedTensor, skipped []string, err error) {
	seen := map[string]bool{}
	visits, nameBytes := 0, 0
	var walk func(v any, prefix string, depth int) error
	walk = func(v any, prefix string, depth int) error {
		if visits++; visits > maxFlattenEntries {
			return fmt.Errorf("more than %d state-dict entries", maxFlattenEntries)
		}
		if nameBytes += len(prefix); nameBytes > maxFlattenNameBytes {
			return fmt.Errorf("state-dict names exceed %d bytes in total", maxFlattenNameBytes)
		}
		switch v := v.(type) {
		case *TensorRef:
			name := strings.TrimSuffix(prefix, ".")
			if seen[name] {
				return fmt.Errorf("tensor name %s appears twice", quoteName(name))
			}
			seen[name] = true
			tensors = append(tensors, NamedTensor{name, v})
			return nil
		case *Dict:
			if depth >= maxFlattenDepth {
				return fmt.Errorf("dicts nested more than %d deep at %s", maxFlattenDepth, quoteName(prefix))
			}
			for i, k := range v.Keys {
				ks, ok := k.(string)
				if !ok {
					skipped = append(skipped, prefix+describe(k))
					continue
				}
				if err := walk(v.Values[i], prefix+ks+".", depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		skipped = append(skipped, strings.TrimSuffix(prefix, ".")+" ("+typeName(v)+")")
		return nil
	}
	if _, ok := v.(*Dict); !ok {
		return nil, nil, fmt.Errorf("checkpoint holds a %s, not a dict of tensors", typeName(v))
	}
	err = walk(v, "", 0)
	return tensors, skipped, err
}

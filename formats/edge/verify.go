package edge

import (
	"encoding/binary"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
)

// The FlatBuffers Go runtime has no verifier: its accessors index the
// buffer directly and panic on a bad offset. verifier walks the header
// along the schema before any accessor runs and checks every table, vtable,
// field, vector and string against the buffer's bounds, so that the
// accessors only ever see offsets that stay inside it.

// maxValueDepth caps how deeply Extra arrays may nest.
const maxValueDepth = 8

type verifier struct {
	buf  []byte
	path string
	base int64 // file offset of buf[0], for error messages
	// budget is the bytes of tables, vectors and strings the walk may
	// still visit. It starts at the buffer's size: a header whose
	// offsets point several times at the same object (which our writer
	// never does) would otherwise let a small file decode into an
	// unbounded amount of memory or time.
	budget int64
}

// spend charges n bytes of visited objects against the budget.
func (v *verifier) spend(pos, n uint64, item string) error {
	v.budget -= int64(n)
	if v.budget < 0 {
		return v.errf(pos, item, "objects in the header are shared or overlap: the walk visits more bytes than the %d-byte header holds", v.n())
	}
	return nil
}

// table is a verified table: its position, vtable and sizes.
type table struct {
	pos, vt, vtsize, tsize uint64
}

func (v *verifier) errf(pos uint64, item, format string, args ...any) error {
	return &Error{Path: v.path, Item: item, Offset: v.base + int64(pos), Msg: fmt.Sprintf(format, args...)}
}

func (v *verifier) n() uint64 { return uint64(len(v.buf)) }

func (v *verifier) u16(p uint64) uint64 { return uint64(binary.LittleEndian.Uint16(v.buf[p:])) }
func (v *verifier) u32(p uint64) uint64 { return uint64(binary.LittleEndian.Uint32(v.buf[p:])) }

// table checks the table at pos and its vtable.
func (v *verifier) table(pos uint64, item string) (table, error) {
	if pos%4 != 0 || pos+4 > v.n() {
		return table{}, v.errf(pos, item, "table at header byte %d is misaligned or outside the %d-byte header", pos, v.n())
	}
	so := int64(int32(binary.LittleEndian.Uint32(v.buf[pos:])))
	vt := int64(pos) - so
	if vt < 0 || vt%2 != 0 || uint64(vt)+4 > v.n() {
		return table{}, v.errf(pos, item, "vtable at header byte %d is misaligned or outside the header", vt)
	}
	t := table{pos: pos, vt: uint64(vt)}
	t.vtsize, t.tsize = v.u16(t.vt), v.u16(t.vt+2)
	if t.vtsize < 4 || t.vtsize%2 != 0 || t.vt+t.vtsize > v.n() {
		return table{}, v.errf(t.vt, item, "vtable of %d bytes is malformed or runs past the header", t.vtsize)
	}
	if t.tsize < 4 || t.pos+t.tsize > v.n() {
		return table{}, v.errf(pos, item, "table of %d bytes is malformed or runs past the header", t.tsize)
	}
	return t, v.spend(pos, t.tsize, item)
}

// field returns the position of a size-byte inline field, or 0 if absent.
func (v *verifier) field(t table, vt flatbuffers.VOffsetT, size uint64, item string) (uint64, error) {
	if uint64(vt)+2 > t.vtsize {
		return 0, nil
	}
	o := v.u16(t.vt + uint64(vt))
	if o == 0 {
		return 0, nil
	}
	if o < 4 || o+size > t.tsize {
		return 0, v.errf(t.pos, item, "field at table offset %d (%d bytes) lies outside the %d-byte table", o, size, t.tsize)
	}
	return t.pos + o, nil
}

// ref follows an offset field and returns its target, or 0 if absent
// (an error when required).
func (v *verifier) ref(t table, vt flatbuffers.VOffsetT, required bool, item string) (uint64, error) {
	p, err := v.field(t, vt, uoffsetSize, item)
	if err != nil {
		return 0, err
	}
	if p == 0 {
		if required {
			return 0, v.errf(t.pos, item, "required field is missing")
		}
		return 0, nil
	}
	target := p + v.u32(p)
	if target >= v.n() {
		return 0, v.errf(p, item, "offset points to header byte %d, past the %d-byte header", target, v.n())
	}
	return target, nil
}

// vector checks a vector of n elements of elem bytes at pos and returns n.
func (v *verifier) vector(pos, elem uint64, item string) (uint64, error) {
	if pos%4 != 0 || pos+4 > v.n() {
		return 0, v.errf(pos, item, "vector at header byte %d is misaligned or outside the header", pos)
	}
	cnt := v.u32(pos)
	if cnt*elem > v.n()-pos-4 {
		return 0, v.errf(pos, item, "vector of %d elements of %d bytes runs past the %d-byte header", cnt, elem, v.n())
	}
	return cnt, v.spend(pos, 4+cnt*elem, item)
}

// str checks a string at pos: bytes in bounds and NUL-terminated.
func (v *verifier) str(pos uint64, item string) error {
	n, err := v.vector(pos, 1, item)
	if err != nil {
		return err
	}
	if end := pos + 4 + n; end >= v.n() || v.buf[end] != 0 {
		return v.errf(pos, item, "string of %d bytes lacks its NUL terminator inside the header", n)
	}
	return nil
}

// strField checks an optional (or required) string field.
func (v *verifier) strField(t table, vt flatbuffers.VOffsetT, required bool, item string) error {
	p, err := v.ref(t, vt, required, item)
	if err != nil || p == 0 {
		return err
	}
	return v.str(p, item)
}

// vecField checks an optional vector field of fixed-size elements.
func (v *verifier) vecField(t table, vt flatbuffers.VOffsetT, elem uint64, item string) (pos, n uint64, err error) {
	p, err := v.ref(t, vt, false, item)
	if err != nil || p == 0 {
		return 0, 0, err
	}
	n, err = v.vector(p, elem, item)
	return p, n, err
}

// each calls f with the position of every table (or string, when strs)
// of an offset vector field.
func (v *verifier) each(t table, vt flatbuffers.VOffsetT, item string, f func(i int, pos uint64) error) error {
	p, n, err := v.vecField(t, vt, uoffsetSize, item)
	if err != nil || p == 0 {
		return err
	}
	for i := uint64(0); i < n; i++ {
		e := p + 4 + 4*i
		target := e + v.u32(e)
		if target >= v.n() {
			return v.errf(e, fmt.Sprintf("%s[%d]", item, i), "offset points to header byte %d, past the %d-byte header", target, v.n())
		}
		if err := f(int(i), target); err != nil {
			return err
		}
	}
	return nil
}

// scalars checks that the listed inline fields of t fit in it.
func (v *verifier) scalars(t table, item string, fields ...[2]uint64) error {
	for _, f := range fields {
		if _, err := v.field(t, flatbuffers.VOffsetT(f[0]), f[1], item); err != nil {
			return err
		}
	}
	return nil
}

// verifyHeader checks the whole buffer along the Bundle schema.
func (v *verifier) verifyHeader() error {
	if v.n() < 8 {
		return v.errf(0, "header", "%d bytes cannot hold a FlatBuffer", v.n())
	}
	root, err := v.table(v.u32(0), "header root")
	if err != nil {
		return err
	}
	if err := v.scalars(root, "header root", [2]uint64{vtBundleAlignment, 4}); err != nil {
		return err
	}
	cp, err := v.ref(root, vtBundleConfig, true, "config")
	if err != nil {
		return err
	}
	if err := v.verifyConfig(cp); err != nil {
		return err
	}
	tp, err := v.ref(root, vtBundleTokenizer, false, "tokenizer")
	if err != nil {
		return err
	}
	if tp != 0 {
		if err := v.verifyTokenizer(tp); err != nil {
			return err
		}
	}
	err = v.each(root, vtBundleExtra, "extra", func(i int, pos uint64) error {
		item := fmt.Sprintf("extra[%d]", i)
		t, err := v.table(pos, item)
		if err != nil {
			return err
		}
		if err := v.strField(t, vtKVKey, true, item+" key"); err != nil {
			return err
		}
		vp, err := v.ref(t, vtKVValue, true, item+" value")
		if err != nil {
			return err
		}
		return v.verifyValue(vp, item+" value", 0)
	})
	if err != nil {
		return err
	}
	return v.each(root, vtBundleTensors, "tensors", func(i int, pos uint64) error {
		item := fmt.Sprintf("tensors[%d]", i)
		t, err := v.table(pos, item)
		if err != nil {
			return err
		}
		if err := v.strField(t, vtTensorName, true, item+" name"); err != nil {
			return err
		}
		if err := v.scalars(t, item, [2]uint64{vtTensorDType, 4}); err != nil {
			return err
		}
		if _, _, err := v.vecField(t, vtTensorShape, 8, item+" shape"); err != nil {
			return err
		}
		d, err := v.field(t, vtTensorData, tensorDataSize, item+" data")
		if err != nil {
			return err
		}
		if d == 0 {
			return v.errf(t.pos, item, "required field data (offset, size, xxhash64) is missing")
		}
		return nil
	})
}

func (v *verifier) verifyConfig(pos uint64) error {
	t, err := v.table(pos, "config")
	if err != nil {
		return err
	}
	if err := v.strField(t, vtConfigFamily, true, "config family"); err != nil {
		return err
	}
	if _, _, err := v.vecField(t, vtConfigSliding, 1, "config sliding"); err != nil {
		return err
	}
	return v.scalars(t, "config",
		[2]uint64{vtConfigNumLayers, 8}, [2]uint64{vtConfigHidden, 8}, [2]uint64{vtConfigFFN, 8},
		[2]uint64{vtConfigNumHeads, 8}, [2]uint64{vtConfigNumKVHeads, 8}, [2]uint64{vtConfigHeadDim, 8},
		[2]uint64{vtConfigVocab, 8}, [2]uint64{vtConfigContextLength, 8}, [2]uint64{vtConfigRMSNormEps, 4},
		[2]uint64{vtConfigRopeBase, 8}, [2]uint64{vtConfigRopeBaseLocal, 8}, [2]uint64{vtConfigRopeScale, 8},
		[2]uint64{vtConfigSlidingWindow, 8}, [2]uint64{vtConfigAttnSoftcap, 4}, [2]uint64{vtConfigFinalSoftcap, 4},
		[2]uint64{vtConfigQueryPreAttnScalar, 8}, [2]uint64{vtConfigQKNorm, 1}, [2]uint64{vtConfigPostNorms, 1},
		[2]uint64{vtConfigTiedEmbeddings, 1}, [2]uint64{vtConfigNormOffset, 4})
}

func (v *verifier) verifyTokenizer(pos uint64) error {
	t, err := v.table(pos, "tokenizer")
	if err != nil {
		return err
	}
	if err := v.strField(t, vtTokModel, false, "tokenizer model"); err != nil {
		return err
	}
	if err := v.strField(t, vtTokNormalizer, false, "tokenizer normalizer"); err != nil {
		return err
	}
	err = v.each(t, vtTokPieces, "tokenizer pieces", func(i int, p uint64) error {
		return v.str(p, fmt.Sprintf("tokenizer piece %d", i))
	})
	if err != nil {
		return err
	}
	if _, _, err := v.vecField(t, vtTokScores, 4, "tokenizer scores"); err != nil {
		return err
	}
	if _, _, err := v.vecField(t, vtTokTypes, 4, "tokenizer types"); err != nil {
		return err
	}
	return v.scalars(t, "tokenizer",
		[2]uint64{vtTokBOS, 4}, [2]uint64{vtTokEOS, 4}, [2]uint64{vtTokUNK, 4}, [2]uint64{vtTokPAD, 4},
		[2]uint64{vtTokEOT, 4}, [2]uint64{vtTokAddBOS, 1}, [2]uint64{vtTokAddEOS, 1},
		[2]uint64{vtTokAddSpacePrefix, 1}, [2]uint64{vtTokByteFallback, 1}, [2]uint64{vtTokSplitDigits, 1},
		[2]uint64{vtTokRemoveExtraWhitespaces, 1})
}

func (v *verifier) verifyValue(pos uint64, item string, depth int) error {
	if depth > maxValueDepth {
		return v.errf(pos, item, "arrays nested more than %d deep", maxValueDepth)
	}
	t, err := v.table(pos, item)
	if err != nil {
		return err
	}
	if err := v.scalars(t, item, [2]uint64{vtValueType, 1}, [2]uint64{vtValueIsArray, 1}); err != nil {
		return err
	}
	if _, _, err := v.vecField(t, vtValueRaw, 1, item+" raw"); err != nil {
		return err
	}
	err = v.each(t, vtValueStrings, item+" strings", func(i int, p uint64) error {
		return v.str(p, fmt.Sprintf("%s string %d", item, i))
	})
	if err != nil {
		return err
	}
	return v.each(t, vtValueItems, item+" items", func(i int, p uint64) error {
		return v.verifyValue(p, fmt.Sprintf("%s[%d]", item, i), depth+1)
	})
}

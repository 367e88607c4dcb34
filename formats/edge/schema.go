package edge

// FlatBuffers accessors and builders for the bundle header, written by hand
// in the shape flatc --go generates for the schema in docs/bundle.md (there
// is no flatc in this build). Accessors do no bounds checking, as generated
// code does not: the reader runs verifyHeader over the whole buffer first,
// and only then uses them. Accessors that return []byte alias the buffer
// (the mapping); callers copy (string(b)) what must outlive the file.
//
// Builders differ from flatc's in one way: scalar fields are always stored,
// even when equal to the schema default (flatc's force_defaults), so the
// header's layout depends only on which vectors and strings it holds and
// their lengths, never on scalar values.

import (
	flatbuffers "github.com/google/flatbuffers/go"
)

// Field slots (vtable offsets: 4 + 2*index), shared by the accessors, the
// builders (which take the index) and the verifier.
const (
	// Bundle
	vtBundleConfig    = 4
	vtBundleTokenizer = 6
	vtBundleExtra     = 8
	vtBundleTensors   = 10
	vtBundleAlignment = 12
	numBundleFields   = 5

	// Config
	vtConfigFamily             = 4
	vtConfigNumLayers          = 6
	vtConfigHidden             = 8
	vtConfigFFN                = 10
	vtConfigNumHeads           = 12
	vtConfigNumKVHeads         = 14
	vtConfigHeadDim            = 16
	vtConfigVocab              = 18
	vtConfigContextLength      = 20
	vtConfigRMSNormEps         = 22
	vtConfigRopeBase           = 24
	vtConfigRopeBaseLocal      = 26
	vtConfigRopeScale          = 28
	vtConfigSlidingWindow      = 30
	vtConfigSliding            = 32
	vtConfigAttnSoftcap        = 34
	vtConfigFinalSoftcap       = 36
	vtConfigQueryPreAttnScalar = 38
	vtConfigQKNorm             = 40
	vtConfigPostNorms          = 42
	vtConfigTiedEmbeddings     = 44
	vtConfigNormOffset         = 46
	numConfigFields            = 22

	// Tokenizer
	vtTokModel                  = 4
	vtTokPieces                 = 6
	vtTokScores                 = 8
	vtTokTypes                  = 10
	vtTokBOS                    = 12
	vtTokEOS                    = 14
	vtTokUNK                    = 16
	vtTokPAD                    = 18
	vtTokEOT                    = 20
	vtTokAddBOS                 = 22
	vtTokAddEOS                 = 24
	vtTokAddSpacePrefix         = 26
	vtTokByteFallback           = 28
	vtTokSplitDigits            = 30
	vtTokRemoveExtraWhitespaces = 32
	vtTokNormalizer             = 34
	numTokFields                = 16

	// KV
	vtKVKey     = 4
	vtKVValue   = 6
	numKVFields = 2

	// Value
	vtValueType    = 4
	vtValueIsArray = 6
	vtValueRaw     = 8
	vtValueStrings = 10
	vtValueItems   = 12
	numValueFields = 5

	// Tensor
	vtTensorName     = 4
	vtTensorDType    = 6
	vtTensorShape    = 8
	vtTensorData     = 10
	numTensorFields  = 4
	tensorDataSize   = 24 // struct TensorData: three ulongs
	tensorDataAlign  = 8
	uoffsetSize      = flatbuffers.SizeUOffsetT
	defaultSpecialID = -1
)

// slot converts a vtable offset to the builder's field index.
func slot(vt flatbuffers.VOffsetT) int { return int(vt-4) / 2 }

// ---- Bundle (root) ----

// fbBundle is the root table.
type fbBundle struct{ _tab flatbuffers.Table }

func getRootAsBundle(buf []byte, offset flatbuffers.UOffsetT) *fbBundle {
	n := flatbuffers.GetUOffsetT(buf[offset:])
	x := &fbBundle{}
	x._tab.Bytes = buf
	x._tab.Pos = n + offset
	return x
}

func (rcv *fbBundle) Config(obj *fbConfig) *fbConfig {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtBundleConfig))
	if o == 0 {
		return nil
	}
	x := rcv._tab.Indirect(o + rcv._tab.Pos)
	if obj == nil {
		obj = new(fbConfig)
	}
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, x
	return obj
}

func (rcv *fbBundle) Tokenizer(obj *fbTokenizer) *fbTokenizer {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtBundleTokenizer))
	if o == 0 {
		return nil
	}
	x := rcv._tab.Indirect(o + rcv._tab.Pos)
	if obj == nil {
		obj = new(fbTokenizer)
	}
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, x
	return obj
}

func (rcv *fbBundle) Extra(obj *fbKV, j int) bool {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtBundleExtra))
	if o == 0 {
		return false
	}
	x := rcv._tab.Vector(o) + flatbuffers.UOffsetT(j)*4
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, rcv._tab.Indirect(x)
	return true
}

func (rcv *fbBundle) ExtraLength() int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtBundleExtra))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

func (rcv *fbBundle) Tensors(obj *fbTensor, j int) bool {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtBundleTensors))
	if o == 0 {
		return false
	}
	x := rcv._tab.Vector(o) + flatbuffers.UOffsetT(j)*4
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, rcv._tab.Indirect(x)
	return true
}

func (rcv *fbBundle) TensorsLength() int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtBundleTensors))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

func (rcv *fbBundle) Alignment() uint32 { return rcv._tab.GetUint32Slot(vtBundleAlignment, Alignment) }

func bundleStart(b *flatbuffers.Builder) { b.StartObject(numBundleFields) }
func bundleAddConfig(b *flatbuffers.Builder, v flatbuffers.UOffsetT) {
	b.PrependUOffsetTSlot(slot(vtBundleConfig), v, 0)
}
func bundleAddTokenizer(b *flatbuffers.Builder, v flatbuffers.UOffsetT) {
	b.PrependUOffsetTSlot(slot(vtBundleTokenizer), v, 0)
}
func bundleAddExtra(b *flatbuffers.Builder, v flatbuffers.UOffsetT) {
	b.PrependUOffsetTSlot(slot(vtBundleExtra), v, 0)
}
func bundleAddTensors(b *flatbuffers.Builder, v flatbuffers.UOffsetT) {
	b.PrependUOffsetTSlot(slot(vtBundleTensors), v, 0)
}
func bundleAddAlignment(b *flatbuffers.Builder, v uint32) {
	b.PrependUint32(v)
	b.Slot(slot(vtBundleAlignment))
}
func bundleEnd(b *flatbuffers.Builder) flatbuffers.UOffsetT { return b.EndObject() }

// ---- Config ----

// fbConfig mirrors ir.Config.
type fbConfig struct{ _tab flatbuffers.Table }

func (rcv *fbConfig) Family() []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtConfigFamily))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(o + rcv._tab.Pos)
}

func (rcv *fbConfig) int64At(vt flatbuffers.VOffsetT) int64 { return rcv._tab.GetInt64Slot(vt, 0) }
func (rcv *fbConfig) NumLayers() int64                      { return rcv.int64At(vtConfigNumLayers) }
func (rcv *fbConfig) Hidden() int64                         { return rcv.int64At(vtConfigHidden) }
func (rcv *fbConfig) FFN() int64                            { return rcv.int64At(vtConfigFFN) }
func (rcv *fbConfig) NumHeads() int64                       { return rcv.int64At(vtConfigNumHeads) }
func (rcv *fbConfig) NumKVHeads() int64                     { return rcv.int64At(vtConfigNumKVHeads) }
func (rcv *fbConfig) HeadDim() int64                        { return rcv.int64At(vtConfigHeadDim) }
func (rcv *fbConfig) Vocab() int64                          { return rcv.int64At(vtConfigVocab) }
func (rcv *fbConfig) ContextLength() int64                  { return rcv.int64At(vtConfigContextLength) }
func (rcv *fbConfig) SlidingWindow() int64                  { return rcv.int64At(vtConfigSlidingWindow) }
func (rcv *fbConfig) RMSNormEps() float32                   { return rcv._tab.GetFloat32Slot(vtConfigRMSNormEps, 0) }
func (rcv *fbConfig) RopeBase() float64                     { return rcv._tab.GetFloat64Slot(vtConfigRopeBase, 0) }
func (rcv *fbConfig) RopeBaseLocal() float64 {
	return rcv._tab.GetFloat64Slot(vtConfigRopeBaseLocal, 0)
}
func (rcv *fbConfig) RopeScale() float64    { return rcv._tab.GetFloat64Slot(vtConfigRopeScale, 0) }
func (rcv *fbConfig) AttnSoftcap() float32  { return rcv._tab.GetFloat32Slot(vtConfigAttnSoftcap, 0) }
func (rcv *fbConfig) FinalSoftcap() float32 { return rcv._tab.GetFloat32Slot(vtConfigFinalSoftcap, 0) }
func (rcv *fbConfig) QueryPreAttnScalar() float64 {
	return rcv._tab.GetFloat64Slot(vtConfigQueryPreAttnScalar, 0)
}
func (rcv *fbConfig) QKNorm() bool    { return rcv._tab.GetBoolSlot(vtConfigQKNorm, false) }
func (rcv *fbConfig) PostNorms() bool { return rcv._tab.GetBoolSlot(vtConfigPostNorms, false) }
func (rcv *fbConfig) TiedEmbeddings() bool {
	return rcv._tab.GetBoolSlot(vtConfigTiedEmbeddings, false)
}
func (rcv *fbConfig) NormOffset() float32 { return rcv._tab.GetFloat32Slot(vtConfigNormOffset, 0) }

func (rcv *fbConfig) Sliding(j int) bool {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtConfigSliding))
	if o == 0 {
		return false
	}
	return rcv._tab.GetBool(rcv._tab.Vector(o) + flatbuffers.UOffsetT(j))
}

func (rcv *fbConfig) SlidingLength() int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtConfigSliding))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

// ---- Tokenizer ----

// fbTokenizer mirrors ir.Tokenizer.
type fbTokenizer struct{ _tab flatbuffers.Table }

func (rcv *fbTokenizer) str(vt flatbuffers.VOffsetT) []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vt))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(o + rcv._tab.Pos)
}

func (rcv *fbTokenizer) vecLen(vt flatbuffers.VOffsetT) int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vt))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

func (rcv *fbTokenizer) Model() []byte      { return rcv.str(vtTokModel) }
func (rcv *fbTokenizer) Normalizer() []byte { return rcv.str(vtTokNormalizer) }
func (rcv *fbTokenizer) PiecesLength() int  { return rcv.vecLen(vtTokPieces) }
func (rcv *fbTokenizer) ScoresLength() int  { return rcv.vecLen(vtTokScores) }
func (rcv *fbTokenizer) TypesLength() int   { return rcv.vecLen(vtTokTypes) }

func (rcv *fbTokenizer) Pieces(j int) []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTokPieces))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(rcv._tab.Vector(o) + flatbuffers.UOffsetT(j*4))
}

func (rcv *fbTokenizer) Scores(j int) float32 {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTokScores))
	if o == 0 {
		return 0
	}
	return rcv._tab.GetFloat32(rcv._tab.Vector(o) + flatbuffers.UOffsetT(j*4))
}

func (rcv *fbTokenizer) Types(j int) int32 {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTokTypes))
	if o == 0 {
		return 0
	}
	return rcv._tab.GetInt32(rcv._tab.Vector(o) + flatbuffers.UOffsetT(j*4))
}

func (rcv *fbTokenizer) BOS() int32 { return rcv._tab.GetInt32Slot(vtTokBOS, defaultSpecialID) }
func (rcv *fbTokenizer) EOS() int32 { return rcv._tab.GetInt32Slot(vtTokEOS, defaultSpecialID) }
func (rcv *fbTokenizer) UNK() int32 { return rcv._tab.GetInt32Slot(vtTokUNK, defaultSpecialID) }
func (rcv *fbTokenizer) PAD() int32 { return rcv._tab.GetInt32Slot(vtTokPAD, defaultSpecialID) }
func (rcv *fbTokenizer) EOT() int32 { return rcv._tab.GetInt32Slot(vtTokEOT, defaultSpecialID) }
func (rcv *fbTokenizer) AddBOS() bool {
	return rcv._tab.GetBoolSlot(vtTokAddBOS, false)
}
func (rcv *fbTokenizer) AddEOS() bool {
	return rcv._tab.GetBoolSlot(vtTokAddEOS, false)
}
func (rcv *fbTokenizer) AddSpacePrefix() bool {
	return rcv._tab.GetBoolSlot(vtTokAddSpacePrefix, false)
}
func (rcv *fbTokenizer) ByteFallback() bool {
	return rcv._tab.GetBoolSlot(vtTokByteFallback, false)
}
func (rcv *fbTokenizer) SplitDigits() bool {
	return rcv._tab.GetBoolSlot(vtTokSplitDigits, false)
}
func (rcv *fbTokenizer) RemoveExtraWhitespaces() bool {
	return rcv._tab.GetBoolSlot(vtTokRemoveExtraWhitespaces, false)
}

// ---- KV and Value ----

// fbKV is one Extra entry.
type fbKV struct{ _tab flatbuffers.Table }

func (rcv *fbKV) Key() []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtKVKey))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(o + rcv._tab.Pos)
}

func (rcv *fbKV) Value(obj *fbValue) *fbValue {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtKVValue))
	if o == 0 {
		return nil
	}
	if obj == nil {
		obj = new(fbValue)
	}
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, rcv._tab.Indirect(o+rcv._tab.Pos)
	return obj
}

// fbValue is a typed metadata value (GGUF's value types).
type fbValue struct{ _tab flatbuffers.Table }

func (rcv *fbValue) Type() uint8   { return rcv._tab.GetUint8Slot(vtValueType, 0) }
func (rcv *fbValue) IsArray() bool { return rcv._tab.GetBoolSlot(vtValueIsArray, false) }

func (rcv *fbValue) RawBytes() []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtValueRaw))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(o + rcv._tab.Pos)
}

func (rcv *fbValue) StringsLength() int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtValueStrings))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

func (rcv *fbValue) Strings(j int) []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtValueStrings))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(rcv._tab.Vector(o) + flatbuffers.UOffsetT(j*4))
}

func (rcv *fbValue) ItemsLength() int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtValueItems))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

func (rcv *fbValue) Items(obj *fbValue, j int) bool {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtValueItems))
	if o == 0 {
		return false
	}
	x := rcv._tab.Vector(o) + flatbuffers.UOffsetT(j)*4
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, rcv._tab.Indirect(x)
	return true
}

// ---- Tensor and TensorData ----

// fbTensor is one tensor table entry.
type fbTensor struct{ _tab flatbuffers.Table }

func (rcv *fbTensor) Name() []byte {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTensorName))
	if o == 0 {
		return nil
	}
	return rcv._tab.ByteVector(o + rcv._tab.Pos)
}

func (rcv *fbTensor) DType() uint32 { return rcv._tab.GetUint32Slot(vtTensorDType, 0) }

func (rcv *fbTensor) ShapeLength() int {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTensorShape))
	if o == 0 {
		return 0
	}
	return rcv._tab.VectorLen(o)
}

func (rcv *fbTensor) Shape(j int) int64 {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTensorShape))
	if o == 0 {
		return 0
	}
	return rcv._tab.GetInt64(rcv._tab.Vector(o) + flatbuffers.UOffsetT(j*8))
}

func (rcv *fbTensor) Data(obj *fbTensorData) *fbTensorData {
	o := flatbuffers.UOffsetT(rcv._tab.Offset(vtTensorData))
	if o == 0 {
		return nil
	}
	if obj == nil {
		obj = new(fbTensorData)
	}
	obj._tab.Bytes, obj._tab.Pos = rcv._tab.Bytes, o+rcv._tab.Pos
	return obj
}

// fbTensorData is the fixed-width struct locating a tensor's bytes.
type fbTensorData struct{ _tab flatbuffers.Struct }

func (rcv *fbTensorData) Offset() uint64   { return rcv._tab.GetUint64(rcv._tab.Pos) }
func (rcv *fbTensorData) Size() uint64     { return rcv._tab.GetUint64(rcv._tab.Pos + 8) }
func (rcv *fbTensorData) Xxhash64() uint64 { return rcv._tab.GetUint64(rcv._tab.Pos + 16) }

// createTensorData writes the struct inline; call it between tensorStart
// and tensorAddData, as generated code does.
func createTensorData(b *flatbuffers.Builder, offset, size, hash uint64) flatbuffers.UOffsetT {
	b.Prep(tensorDataAlign, tensorDataSize)
	b.PrependUint64(hash)
	b.PrependUint64(size)
	b.PrependUint64(offset)
	return b.Offset()
}

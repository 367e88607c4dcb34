package pytorch

import (
	"fmt"
	"math"
	"math/big"
	"strings"
	"unicode/utf8"

	"github.com/gemmaconv/gemmaconv/ir"
)

// ScalarType is a torch element type.
type ScalarType uint8

// The element types a checkpoint's storages can have.
const (
	Float32 ScalarType = iota + 1
	Float64
	Float16
	BFloat16
	Int64
	Int32
	Int16
	Int8
	Uint8
	Bool
	Complex64
	Complex128
	Float8E4M3
	Float8E5M2
)

var scalarInfo = map[ScalarType]struct {
	name string
	size int64
}{
	Float32: {"float32", 4}, Float64: {"float64", 8}, Float16: {"float16", 2}, BFloat16: {"bfloat16", 2},
	Int64: {"int64", 8}, Int32: {"int32", 4}, Int16: {"int16", 2}, Int8: {"int8", 1}, Uint8: {"uint8", 1},
	Bool: {"bool", 1}, Complex64: {"complex64", 8}, Complex128: {"complex128", 16},
	Float8E4M3: {"float8_e4m3fn", 1}, Float8E5M2: {"float8_e5m2", 1},
}

// Size is the element size in bytes.
func (s ScalarType) Size() int64 { return scalarInfo[s].size }

// String returns torch's name for the type ("bfloat16").
func (s ScalarType) String() string {
	if i, ok := scalarInfo[s]; ok {
		return i.name
	}
	return fmt.Sprintf("ScalarType(%d)", uint8(s))
}

// IR maps the type to the IR's, where the IR has it.
func (s ScalarType) IR() (ir.DType, bool) {
	switch s {
	case Float32:
		return ir.F32, true
	case Float64:
		return ir.F64, true
	case Float16:
		return ir.F16, true
	case BFloat16:
		return ir.BF16, true
	case Int64:
		return ir.I64, true
	case Int32:
		return ir.I32, true
	case Int16:
		return ir.I16, true
	case Int8:
		return ir.I8, true
	}
	return 0, false
}

type globalKind uint8

const (
	kStorageType globalKind = iota + 1
	kDType
	kRebuildV1
	kRebuildV2
	kRebuildV3
	kRebuildParam
	kRebuildParamState
	kRebuildFromType
	kOrderedDict
	kTensorClass
	kCodecsEncode
)

// allowlist is every module.name a checkpoint pickle may refer to. Each is
// implemented here in Go; nothing is imported or called.
var allowlist = map[string]*Global{}

func allow(module, name string, k globalKind, t ScalarType) {
	allowlist[module+"."+name] = &Global{Module: module, Name: name, kind: k, dtype: t}
}

func init() {
	for name, t := range map[string]ScalarType{
		"FloatStorage": Float32, "DoubleStorage": Float64, "HalfStorage": Float16, "BFloat16Storage": BFloat16,
		"LongStorage": Int64, "IntStorage": Int32, "ShortStorage": Int16, "CharStorage": Int8,
		"ByteStorage": Uint8, "BoolStorage": Bool, "ComplexFloatStorage": Complex64,
		"ComplexDoubleStorage": Complex128, "UntypedStorage": Uint8,
	} {
		allow("torch", name, kStorageType, t)
	}
	allow("torch.storage", "UntypedStorage", kStorageType, Uint8)
	for name, t := range map[string]ScalarType{
		"float32": Float32, "float": Float32, "float64": Float64, "double": Float64, "float16": Float16,
		"half": Float16, "bfloat16": BFloat16, "int64": Int64, "long": Int64, "int32": Int32, "int": Int32,
		"int16": Int16, "short": Int16, "int8": Int8, "uint8": Uint8, "bool": Bool, "complex64": Complex64,
		"cfloat": Complex64, "complex128": Complex128, "cdouble": Complex128, "float8_e4m3fn": Float8E4M3,
		"float8_e5m2": Float8E5M2,
	} {
		allow("torch", name, kDType, t)
	}
	allow("torch._utils", "_rebuild_tensor", kRebuildV1, 0)
	allow("torch._utils", "_rebuild_tensor_v2", kRebuildV2, 0)
	allow("torch._utils", "_rebuild_tensor_v3", kRebuildV3, 0)
	allow("torch._utils", "_rebuild_parameter", kRebuildParam, 0)
	allow("torch._utils", "_rebuild_parameter_with_state", kRebuildParamState, 0)
	allow("torch._tensor", "_rebuild_from_type_v2", kRebuildFromType, 0)
	allow("collections", "OrderedDict", kOrderedDict, 0)
	allow("torch", "Tensor", kTensorClass, 0)
	allow("torch.nn.parameter", "Parameter", kTensorClass, 0)
	allow("_codecs", "encode", kCodecsEncode, 0)
}

// refusedWhy explains refusals of names a reader may wonder about.
var refusedWhy = map[string]string{
	"torch.storage._load_from_bytes": "it runs torch.load on bytes embedded in the pickle",
	"torch._utils._rebuild_qtensor":  "quantized torch tensors are not supported",
	"builtins.eval":                  "it evaluates Python code",
	"builtins.exec":                  "it executes Python code",
	"os.system":                      "it runs a shell command",
	"posix.system":                   "it runs a shell command",
	"functools.partial":              "it calls arbitrary functions",
}

func (m *vm) findGlobal(module, name string) (*Global, error) {
	full := module + "." + name
	if g, ok := allowlist[full]; ok {
		return g, nil
	}
	why := refusedWhy[full]
	if why == "" {
		why = "only torch tensor-rebuild functions, storage types, dtypes and collections.OrderedDict are allowed; a pickle that loads anything else could run code"
	}
	return nil, m.fail("refused global %s: %s", quoteName(full), why)
}

// quoteName prints a module.name from the file safely (it may hold control
// characters or invalid UTF-8).
func quoteName(s string) string {
	s = truncate(s)
	if utf8.ValidString(s) && !strings.ContainsAny(s, "\n\r\t\"\\") {
		return s
	}
	return fmt.Sprintf("%q", s)
}

func (m *vm) call(fn any, args Tuple) (any, error) {
	g, ok := fn.(*Global)
	if !ok {
		return nil, m.fail("REDUCE on a %s is not allowed", typeName(fn))
	}
	switch g.kind {
	case kOrderedDict:
		d := NewDict()
		if len(args) == 0 {
			return d, nil
		}
		if len(args) == 1 {
			var items []any
			switch a := args[0].(type) {
			case *List:
				items = a.Items
			case Tuple:
				items = a
			default:
				return nil, m.fail("OrderedDict(%s) is not supported", typeName(args[0]))
			}
			for _, it := range items {
				p, ok := it.(Tuple)
				if !ok || len(p) != 2 {
					return nil, m.fail("OrderedDict item is a %s, not a pair", typeName(it))
				}
				if err := d.set(p[0], p[1], &m.hashBudget); err != nil {
					return nil, m.fail("%v", err)
				}
			}
			return d, nil
		}
		return nil, m.fail("OrderedDict with %d arguments", len(args))
	case kRebuildV1, kRebuildV2, kRebuildV3:
		return m.rebuildTensor(g, args)
	case kRebuildParam, kRebuildParamState:
		want := 3
		if g.kind == kRebuildParamState {
			want = 4
		}
		if len(args) != want {
			return nil, m.fail("%s takes %d arguments, got %d", g, want, len(args))
		}
		t, ok := args[0].(*TensorRef)
		if !ok {
			return nil, m.fail("%s of a %s", g, typeName(args[0]))
		}
		if rg, ok := args[1].(bool); ok {
			t.RequiresGrad = rg
		}
		return t, nil
	case kRebuildFromType:
		if len(args) != 4 {
			return nil, m.fail("%s takes 4 arguments, got %d", g, len(args))
		}
		f, ok := args[0].(*Global)
		if !ok || (f.kind != kRebuildV1 && f.kind != kRebuildV2 && f.kind != kRebuildV3 && f.kind != kRebuildParam) {
			return nil, m.fail("%s with function %s is not allowed", g, typeName(args[0]))
		}
		if c, ok := args[1].(*Global); !ok || c.kind != kTensorClass {
			return nil, m.fail("%s with type %s is not allowed (torch.Tensor or Parameter only)", g, typeName(args[1]))
		}
		inner, ok := args[2].(Tuple)
		if !ok {
			return nil, m.fail("%s arguments are a %s, not a tuple", g, typeName(args[2]))
		}
		// The state (args[3]) is the tensor's Python __dict__; it carries
		// no data and is dropped.
		return m.call(f, inner)
	case kCodecsEncode:
		// Protocol 2 pickles bytes as _codecs.encode(latin1 text, "latin1").
		if len(args) != 2 {
			return nil, m.fail("_codecs.encode takes 2 arguments here, got %d", len(args))
		}
		s, ok1 := args[0].(string)
		enc, ok2 := args[1].(string)
		if !ok1 || !ok2 {
			return nil, m.fail("_codecs.encode(%s, %s) is not supported", typeName(args[0]), typeName(args[1]))
		}
		switch strings.ToLower(strings.ReplaceAll(enc, "-", "")) {
		case "latin1", "iso88591":
			out := make([]byte, 0, len(s))
			for _, r := range s {
				if r > 0xff {
					return nil, m.fail("_codecs.encode: code point %U is not Latin-1", r)
				}
				out = append(out, byte(r))
			}
			return out, nil
		case "utf8", "ascii":
			return []byte(s), nil
		}
		return nil, m.fail("_codecs.encode with encoding %s is not supported", quoteName(enc))
	}
	return nil, m.fail("calling %s is not allowed", g)
}

func (m *vm) instantiate(cls any, args Tuple) (any, error) {
	if g, ok := cls.(*Global); ok && g.kind == kOrderedDict {
		return NewDict(), nil
	}
	return nil, m.fail("creating an instance of %s is not allowed", typeName(cls))
}

func (m *vm) build(inst, state any) error {
	d, ok := inst.(*Dict)
	if !ok {
		return m.fail("BUILD (setting the state of) a %s is not allowed", typeName(inst))
	}
	switch s := state.(type) {
	case nil, *Dict:
		d.Attrs = s
		return nil
	case Tuple:
		// (instance dict, slots dict)
		if len(s) == 2 {
			d.Attrs = s
			return nil
		}
	}
	return m.fail("BUILD of a dict with a %s state", typeName(state))
}

// rebuildTensor implements torch._utils._rebuild_tensor{,_v2,_v3}: a view
// (offset, shape, stride) of a storage. The view is checked against the
// storage's size here, before anything can read through it.
func (m *vm) rebuildTensor(g *Global, args Tuple) (any, error) {
	var min, max int
	switch g.kind {
	case kRebuildV1:
		min, max = 4, 4
	case kRebuildV2:
		min, max = 6, 7
	default:
		min, max = 7, 8
	}
	if len(args) < min || len(args) > max {
		return nil, m.fail("%s takes %d arguments, got %d", g, min, len(args))
	}
	st, ok := args[0].(*Storage)
	if !ok {
		return nil, m.fail("%s of a %s, not a storage", g, typeName(args[0]))
	}
	off, ok := args[1].(int64)
	if !ok {
		return nil, m.fail("%s: storage offset is a %s", g, typeName(args[1]))
	}
	shape, err := intTuple(args[2])
	if err != nil {
		return nil, m.fail("%s: size: %v", g, err)
	}
	stride, err := intTuple(args[3])
	if err != nil {
		return nil, m.fail("%s: stride: %v", g, err)
	}
	t := &TensorRef{Storage: st, DType: st.Type, Offset: off, Shape: shape, Stride: stride}
	if g.kind != kRebuildV1 {
		if rg, ok := args[4].(bool); ok {
			t.RequiresGrad = rg
		}
	}
	if g.kind == kRebuildV3 {
		dt, ok := args[6].(*Global)
		if !ok || dt.kind != kDType {
			return nil, m.fail("%s: dtype is a %s", g, typeName(args[6]))
		}
		t.DType = dt.dtype
	}
	if err := t.check(); err != nil {
		return nil, m.fail("%v", err)
	}
	m.tensors = append(m.tensors, t)
	return t, nil
}

// maxDims bounds tensor rank; torch allows 64.
const maxDims = 64

func intTuple(v any) ([]int64, error) {
	var items []any
	switch v := v.(type) {
	case Tuple:
		items = v
	case *List:
		items = v.Items
	default:
		return nil, fmt.Errorf("a %s, not a tuple", typeName(v))
	}
	if len(items) > maxDims {
		return nil, fmt.Errorf("%d dimensions (limit %d)", len(items), maxDims)
	}
	out := make([]int64, len(items))
	for i, it := range items {
		n, ok := it.(int64)
		if !ok {
			return nil, fmt.Errorf("element %d is a %s", i, typeName(it))
		}
		out[i] = n
	}
	return out, nil
}

// storageTable resolves the persistent ids of one checkpoint pickle to
// shared *Storage values.
type storageTable struct {
	byKey  map[string]*Storage
	order  []*Storage
	legacy bool
}

func newStorageTable(legacy bool) *storageTable {
	return &storageTable{byKey: map[string]*Storage{}, legacy: legacy}
}

func pyStr(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// load is the persistent_load of torch.load: ('storage', storage type,
// key, location, numel) in zip archives, with a sixth view_metadata
// element in the legacy format. It only ever yields storage references.
func (st *storageTable) load(pid any) (any, error) {
	t, ok := pid.(Tuple)
	if !ok || len(t) == 0 {
		return nil, fmt.Errorf("persistent id %s is not a storage reference", describe(pid))
	}
	kind, _ := pyStr(t[0])
	if kind == "module" {
		return nil, fmt.Errorf("the checkpoint pickles a whole nn.Module (persistent id 'module'); only state dicts are supported")
	}
	want := 5
	if st.legacy {
		want = 6
	}
	if kind != "storage" || len(t) != want {
		return nil, fmt.Errorf("persistent id %s is not a storage reference", describe(pid))
	}
	typ, ok := t[1].(*Global)
	if !ok || typ.kind != kStorageType {
		return nil, fmt.Errorf("persistent id: storage type is %s", typeName(t[1]))
	}
	key, ok := pyStr(t[2])
	if !ok {
		return nil, fmt.Errorf("persistent id: storage key is a %s", typeName(t[2]))
	}
	loc, _ := pyStr(t[3])
	numel, ok := t[4].(int64)
	if !ok || numel < 0 || numel > math.MaxInt64/typ.dtype.Size() {
		return nil, fmt.Errorf("persistent id: storage %s has bad size %s", quoteName(key), describe(t[4]))
	}
	s := st.byKey[key]
	if s == nil {
		s = &Storage{Key: key, Type: typ.dtype, Numel: numel, Location: loc}
		st.byKey[key] = s
		st.order = append(st.order, s)
	} else if s.Type != typ.dtype || s.Numel != numel {
		return nil, fmt.Errorf("storage %s is referenced as %d %s and as %d %s", quoteName(key), s.Numel, s.Type, numel, typ.dtype)
	}
	if st.legacy && t[5] != nil {
		vm, ok := t[5].(Tuple)
		if !ok || len(vm) != 3 {
			return nil, fmt.Errorf("storage %s: bad view metadata %s", quoteName(key), describe(t[5]))
		}
		vkey, ok1 := pyStr(vm[0])
		voff, ok2 := vm[1].(int64)
		vsize, ok3 := vm[2].(int64)
		if !ok1 || !ok2 || !ok3 || voff < 0 || vsize < 0 || voff > numel || vsize > numel-voff {
			return nil, fmt.Errorf("storage %s: view %s is outside its %d elements", quoteName(key), describe(vm), numel)
		}
		return &Storage{Key: vkey, Type: s.Type, Numel: vsize, Location: loc, parent: s, parentOff: voff * s.Type.Size()}, nil
	}
	return s, nil
}

// bigEqual reports whether v is the integer want.
func bigEqual(v any, want *big.Int) bool {
	switch v := v.(type) {
	case int64:
		return want.IsInt64() && want.Int64() == v
	case *big.Int:
		return v.Cmp(want) == 0
	}
	return false
}

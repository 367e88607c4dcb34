package pytorch

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// The unpickler builds plain Go values:
//
//	None            nil
//	bool            bool
//	int             int64, or *big.Int when it does not fit
//	float           float64
//	str             string
//	bytes/bytearray []byte
//	tuple           Tuple
//	list            *List
//	dict            *Dict (also collections.OrderedDict)
//	set, frozenset  *Set
//	allowlisted global (a storage type, a dtype, a rebuild function) *Global
//	persistent id resolved by torch             *Storage
//	tensor rebuilt by an allowlisted function   *TensorRef
//
// Mutable containers are pointers so that memo references (a list fetched
// with GET and appended to) alias as they do in Python.

// Tuple is a Python tuple.
type Tuple []any

// List is a Python list.
type List struct{ Items []any }

// Set is a Python set or frozenset; items keep insertion order.
type Set struct{ Items []any }

// Dict is a Python dict or collections.OrderedDict. Keys keep insertion
// order; assigning an existing key replaces its value in place, as Python
// does.
type Dict struct {
	Keys   []any
	Values []any
	// Attrs is the instance state a BUILD opcode gave the dict (the
	// _metadata attribute of a state_dict OrderedDict); it is kept, never
	// interpreted.
	Attrs any
	index map[string]int
}

// NewDict returns an empty dict.
func NewDict() *Dict { return &Dict{index: map[string]int{}} }

// Len returns the number of entries.
func (d *Dict) Len() int { return len(d.Keys) }

// Get returns the value stored under a string key.
func (d *Dict) Get(key string) (any, bool) {
	budget := len(key) + 64
	h, _ := keyOf(key, &budget)
	i, ok := d.index[h]
	if !ok {
		return nil, false
	}
	return d.Values[i], true
}

// set stores v under k; k must be hashable. Hashing draws on budget, the
// unpickler's allowance of key bytes.
func (d *Dict) set(k, v any, budget *int) error {
	h, err := keyOf(k, budget)
	if err != nil {
		return err
	}
	if d.index == nil {
		d.index = map[string]int{}
	}
	if i, ok := d.index[h]; ok {
		d.Values[i] = v
		return nil
	}
	d.index[h] = len(d.Keys)
	d.Keys = append(d.Keys, k)
	d.Values = append(d.Values, v)
	return nil
}

// maxKeyDepth bounds the nesting of tuple keys so hashing cannot recurse
// without limit on a hostile pickle.
const maxKeyDepth = 16

// keyOf returns a string that is equal for equal Python keys of the types
// a pickle can use as dict keys; unhashable values are an error as they
// are in Python. Each call spends the bytes it hashes from budget: memo
// references let a small pickle use a long string or a tuple that repeats
// one exponentially often as a key many times, so the unpickler bounds the
// total.
func keyOf(k any, budget *int) (string, error) {
	var b strings.Builder
	if err := hashKey(&b, k, 0, budget); err != nil {
		return "", err
	}
	return b.String(), nil
}

func hashKey(b *strings.Builder, k any, depth int, budget *int) error {
	if depth > maxKeyDepth {
		return fmt.Errorf("dict key nested more than %d deep", maxKeyDepth)
	}
	emit := func(tag byte, s string) error {
		if *budget -= len(s) + 16; *budget < 0 {
			return fmt.Errorf("dict keys exceed the limit on hashed bytes")
		}
		// Length-prefixed so that concatenations cannot collide.
		b.WriteByte(tag)
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
		return nil
	}
	switch v := k.(type) {
	case nil:
		return emit('n', "")
	case bool:
		// True == 1 and False == 0 as keys in Python.
		if v {
			return emit('i', "1")
		}
		return emit('i', "0")
	case int64:
		return emit('i', strconv.FormatInt(v, 10))
	case *big.Int:
		return emit('i', v.String())
	case float64:
		if v == float64(int64(v)) {
			return emit('i', strconv.FormatInt(int64(v), 10))
		}
		return emit('f', strconv.FormatFloat(v, 'g', -1, 64))
	case string:
		return emit('s', v)
	case []byte:
		return emit('b', string(v))
	case Tuple:
		if err := emit('(', strconv.Itoa(len(v))); err != nil {
			return err
		}
		for _, e := range v {
			if err := hashKey(b, e, depth+1, budget); err != nil {
				return err
			}
		}
		return nil
	case *Global:
		return emit('g', v.Module+"."+v.Name)
	}
	return fmt.Errorf("unhashable dict key of type %s", typeName(k))
}

// Global is an allowlisted module attribute a pickle referred to with
// GLOBAL, STACK_GLOBAL or INST. Only the names in the allowlist become
// Globals; anything else stops unpickling.
type Global struct {
	Module, Name string
	kind         globalKind
	dtype        ScalarType // for storage types and dtype objects
}

// String returns the dotted name, as "torch._utils._rebuild_tensor_v2".
func (g *Global) String() string { return g.Module + "." + g.Name }

// typeName describes a value's Python type for error messages.
func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case Tuple:
		return "tuple"
	case *List:
		return "list"
	case *Dict:
		return "dict"
	case *Set:
		return "set"
	case *Global:
		return v.String()
	case *Storage:
		return "storage"
	case *TensorRef:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

package pytorch

import (
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

const goldens = "../../goldens/pytorch"

// canon renders an unpickled value as make_goldens.py's canon() renders the
// Python object.
func canon(v any) string {
	join := func(items []any) string {
		s := make([]string, len(items))
		for i, it := range items {
			s[i] = canon(it)
		}
		return strings.Join(s, ",")
	}
	switch v := v.(type) {
	case nil:
		return "N"
	case bool:
		if v {
			return "T"
		}
		return "F"
	case int64:
		return "i" + strconv.FormatInt(v, 10)
	case *big.Int:
		return "i" + v.String()
	case float64:
		s := strconv.FormatFloat(v, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eIN") {
			s += ".0"
		}
		return "f" + s
	case string:
		return "s" + hex.EncodeToString([]byte(v))
	case []byte:
		return "b" + hex.EncodeToString(v)
	case Tuple:
		return "(" + join(v) + ")"
	case *List:
		return "[" + join(v.Items) + "]"
	case *Set:
		return "<" + join(v.Items) + ">"
	case *Dict:
		s := make([]string, len(v.Keys))
		for i := range v.Keys {
			s[i] = canon(v.Keys[i]) + ":" + canon(v.Values[i])
		}
		return "{" + strings.Join(s, ",") + "}"
	}
	return "?" + typeName(v)
}

// TestProtocols unpickles CPython's pickles of one object in every
// protocol (0 to 5) and compares with CPython's own rendering of it.
func TestProtocols(t *testing.T) {
	for proto := 0; proto <= 5; proto++ {
		data, err := os.ReadFile(filepath.Join(goldens, "pickles", "proto"+strconv.Itoa(proto)+".pkl"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(goldens, "pickles", "proto"+strconv.Itoa(proto)+".canon"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := UnpickleBytes(data, UnpickleOptions{})
		if err != nil {
			t.Fatalf("protocol %d: %v", proto, err)
		}
		if got := canon(v); got != strings.TrimSpace(string(want)) {
			t.Errorf("protocol %d:\n got %s\nwant %s", proto, got, want)
		}
		// Memo references alias: obj["shared"] holds the same list twice.
		sh, _ := v.(*Dict).Get("shared")
		items := sh.(*List).Items
		if items[0].(*List) != items[1].(*List) {
			t.Errorf("protocol %d: memoized list was copied, not shared", proto)
		}
	}
}

// pk builds pickles by hand.
type pk struct{ b []byte }

func (p *pk) op(b ...byte) *pk { p.b = append(p.b, b...); return p }
func (p *pk) raw(s string) *pk { p.b = append(p.b, s...); return p }
func (p *pk) proto(n byte) *pk { return p.op(opPROTO, n) }
func (p *pk) global(mod, name string) *pk {
	return p.op(opGLOBAL).raw(mod + "\n" + name + "\n")
}
func (p *pk) str(s string) *pk {
	p.op(opBINUNICODE)
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	return p.raw(s)
}
func (p *pk) int(n int32) *pk {
	p.op(opBININT)
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(n))
	return p
}
func (p *pk) stop() []byte { return append(p.b, opSTOP) }

// tensorPickle is a minimal torch zip-format state dict {name: tensor}
// with the given storage (type, key, numel) and view.
func tensorPickle(name, storageType, key string, numel int32, offset int32, shape, stride []int32) []byte {
	p := (&pk{}).proto(2).op(opEMPTY_DICT).str(name)
	p.global("torch._utils", "_rebuild_tensor_v2").op(opMARK)
	p.op(opMARK).str("storage").global("torch", storageType).str(key).str("cpu").int(numel).op(opTUPLE, opBINPERSID)
	p.int(offset)
	p.op(opMARK)
	for _, d := range shape {
		p.int(d)
	}
	p.op(opTUPLE, opMARK)
	for _, s := range stride {
		p.int(s)
	}
	p.op(opTUPLE, opNEWFALSE).global("collections", "OrderedDict").op(opEMPTY_TUPLE, opREDUCE, opTUPLE, opREDUCE, opSETITEM)
	return p.stop()
}

func persistentTable() UnpickleOptions {
	return UnpickleOptions{Persistent: newStorageTable(false).load}
}

// TestHostilePickles feeds pickles that try to run code or exhaust memory.
// Each must fail with a clear error at a byte offset, allocate little, and
// never reach the last-resort recover.
func TestHostilePickles(t *testing.T) {
	small := Limits{MaxObjects: 10000, MaxStack: 1000, MaxMarks: 100, MaxMemo: 100, MaxBytes: 1 << 20}
	huge := func(op byte, n uint64, width int) []byte {
		b := []byte{0x80, 4, op}
		switch width {
		case 4:
			b = binary.LittleEndian.AppendUint32(b, uint32(n))
		case 8:
			b = binary.LittleEndian.AppendUint64(b, n)
		}
		return append(b, "abc."...)
	}
	deep := func(n int, op byte) []byte {
		b := []byte{0x80, 2}
		for i := 0; i < n; i++ {
			b = append(b, op)
		}
		return append(b, '.')
	}
	many := func(n int, body ...byte) []byte {
		b := []byte{0x80, 2, ']'}
		for i := 0; i < n; i++ {
			b = append(b, body...)
		}
		return append(b, '.')
	}
	// A storage whose element count overflows numel*size.
	hugeStorage := (&pk{}).proto(2).op(opMARK).str("storage").global("torch", "DoubleStorage").str("0").str("cpu")
	hugeStorage.op(opLONG1, 8).raw("\x00\x00\x00\x00\x00\x00\x00\x40").op(opTUPLE, opBINPERSID)
	cases := []struct {
		name string
		data []byte
		lim  Limits
		want string
	}{
		{"os.system via REDUCE (protocol 0)", []byte("cos\nsystem\n(S'echo pwned'\ntR."), Limits{}, "refused global os.system: it runs a shell command"},
		{"posix.system", []byte("cposix\nsystem\n(S'id'\ntR."), Limits{}, "refused global posix.system"},
		{"builtins.eval", (&pk{}).proto(2).global("builtins", "eval").str("1+1").op(opTUPLE1, opREDUCE).stop(), Limits{}, "refused global builtins.eval"},
		{"__builtin__.eval", (&pk{}).global("__builtin__", "eval").str("1").op(opTUPLE1, opREDUCE).stop(), Limits{}, "refused global __builtin__.eval"},
		{"subprocess.Popen", (&pk{}).proto(2).global("subprocess", "Popen").str("ls").op(opTUPLE1, opREDUCE).stop(), Limits{}, "refused global subprocess.Popen"},
		{"functools.partial", (&pk{}).proto(2).global("functools", "partial").op(opEMPTY_TUPLE, opREDUCE).stop(), Limits{}, "refused global functools.partial"},
		{"STACK_GLOBAL os.system", (&pk{}).proto(4).str("os").str("system").op(opSTACK_GLOBAL).str("id").op(opTUPLE1, opREDUCE).stop(), Limits{}, "refused global os.system"},
		{"INST os.system", []byte("(S'id'\nios\nsystem\n."), Limits{}, "refused global os.system"},
		{"NEWOBJ gadget class", (&pk{}).proto(2).global("__main__", "Exploit").op(opEMPTY_TUPLE, opNEWOBJ).op(opEMPTY_DICT).op(opBUILD).stop(), Limits{}, "refused global __main__.Exploit"},
		{"NEWOBJ on an allowlisted non-class", (&pk{}).proto(2).global("torch", "FloatStorage").op(opEMPTY_TUPLE, opNEWOBJ).stop(), Limits{}, "creating an instance of torch.FloatStorage is not allowed"},
		{"OBJ on a storage type", (&pk{}).op(opMARK).global("torch", "FloatStorage").op(opOBJ).stop(), Limits{}, "creating an instance of torch.FloatStorage"},
		{"BUILD on a list", (&pk{}).proto(2).op(opEMPTY_LIST, opEMPTY_DICT, opBUILD).stop(), Limits{}, "BUILD (setting the state of) a list is not allowed"},
		{"BUILD on a global", (&pk{}).proto(2).global("torch", "float32").op(opEMPTY_DICT, opBUILD).stop(), Limits{}, "BUILD (setting the state of) a torch.float32"},
		{"_load_from_bytes", (&pk{}).proto(2).global("torch.storage", "_load_from_bytes").op('C', 1, 'x', opTUPLE1, opREDUCE).stop(), Limits{}, "refused global torch.storage._load_from_bytes: it runs torch.load"},
		{"qtensor", (&pk{}).proto(2).global("torch._utils", "_rebuild_qtensor").stop(), Limits{}, "quantized torch tensors are not supported"},
		{"calling a dtype", (&pk{}).proto(2).global("torch", "float32").op(opEMPTY_TUPLE, opREDUCE).stop(), Limits{}, "calling torch.float32 is not allowed"},
		{"REDUCE on a string", (&pk{}).proto(2).str("os.system").op(opEMPTY_TUPLE, opREDUCE).stop(), Limits{}, "REDUCE on a str is not allowed"},
		{"rebuild_from_type with OrderedDict", (&pk{}).proto(2).global("torch._tensor", "_rebuild_from_type_v2").op(opMARK).global("collections", "OrderedDict").global("torch", "Tensor").op(opEMPTY_TUPLE, opEMPTY_DICT, opTUPLE, opREDUCE).stop(), Limits{}, "with function collections.OrderedDict is not allowed"},
		{"extension code", []byte{0x80, 2, opEXT1, 1, '.'}, Limits{}, "extension codes are not supported"},
		{"out-of-band buffer", []byte{0x80, 5, opNEXT_BUFFER, '.'}, Limits{}, "out-of-band buffers"},
		{"persistent id without resolver", []byte("Pfoo\n."), Limits{}, "persistent id \"foo\" with no storage resolver"},
		{"protocol 6", []byte{0x80, 6, 'N', '.'}, Limits{}, "unsupported pickle protocol 6"},
		{"unknown opcode", []byte{0x80, 2, 0xff, '.'}, Limits{}, "unknown opcode"},
		{"empty", nil, Limits{}, "ends before its STOP"},
		{"no STOP", []byte{0x80, 2, 'N'}, Limits{}, "ends before its STOP"},
		{"underflow", []byte{0x80, 2, 'R', '.'}, Limits{}, "stack underflow"},
		{"TUPLE without MARK", []byte{0x80, 2, 'N', 't', '.'}, Limits{}, "no MARK"},
		{"SETITEM on a list", []byte{0x80, 2, ']', 'N', 'N', 's', '.'}, Limits{}, "SETITEM on a list"},
		{"unhashable key", []byte{0x80, 2, '}', ']', 'N', 's', '.'}, Limits{}, "unhashable dict key of type list"},
		{"BINUNICODE length 4 GiB", huge(opBINUNICODE, 0xffffffff, 4), Limits{}, "runs past the end"},
		{"BINBYTES8 length 2^62", huge(opBINBYTES8, 1<<62, 8), Limits{}, "runs past the end"},
		{"BINUNICODE8 length 2^64-1", huge(opBINUNICODE8, 1<<64-1, 8), Limits{}, "is too large"},
		{"BYTEARRAY8 negative", huge(opBYTEARRAY8, 1<<63, 8), Limits{}, "is too large"},
		{"LONG4 of 2 GiB", huge(opLONG4, 0x7fffffff, 4), Limits{}, "integer of 2147483647 bytes is too large"},
		{"LONG4 negative", huge(opLONG4, 0xffffffff, 4), Limits{}, "negative length"},
		{"BINSTRING negative", huge(opBINSTRING, 0x80000000, 4), Limits{}, "negative length"},
		{"FRAME past end", huge(opFRAME, 1<<40, 8), Limits{}, "frame of 1099511627776 bytes runs past the end"},
		{"decimal integer of 10k digits", []byte("I" + strings.Repeat("9", 10000) + "\n."), Limits{}, "exceeds the limit of 4300"},
		{"strings beyond MaxBytes", func() []byte {
			p := (&pk{}).proto(2).op(opMARK)
			for i := 0; i < 5; i++ {
				p.str(strings.Repeat("x", 300_000))
			}
			return p.op(opTUPLE).stop()
		}(), small, "strings and bytes exceed 1048576 bytes"},
		{"deep MARK nesting", deep(200000, '('), small, "marks nested more than 100 deep"},
		{"DUP bomb", many(100000, '2'), small, "more than 1000 values on the stack"},
		{"object bomb", many(100000, '2', 'a'), small, "more than 10000 values"},
		{"memo flood", func() []byte {
			b := []byte{0x80, 2, 'N'}
			for i := 0; i < 1000; i++ {
				b = append(b, 'r')
				b = binary.LittleEndian.AppendUint32(b, uint32(i*7919))
			}
			return append(b, '.')
		}(), small, "more than 100 memo entries"},
		{"GET of an unset memo slot", []byte{0x80, 2, 'j', 0xff, 0xff, 0xff, 0xff, '.'}, Limits{}, "memo entry 4294967295 was never stored"},
		{"bad PUT text", []byte("Np-1\n."), Limits{}, "bad PUT index"},
		{"persistent module", (&pk{}).proto(2).str("module").op(opTUPLE1, opBINPERSID).stop(), Limits{}, "pickles a whole nn.Module"},
		{"storage of 2^62 doubles", hugeStorage.stop(), Limits{}, "storage 0 has bad size"},
		{"view beyond its storage", tensorPickle("w", "FloatStorage", "0", 10, 4, []int32{2, 4}, []int32{4, 1}), Limits{}, "beyond storage"},
		{"negative stride", tensorPickle("w", "FloatStorage", "0", 10, 0, []int32{2}, []int32{-1}), Limits{}, "negative size or stride"},
		{"view overflow", tensorPickle("w", "FloatStorage", "0", 10, 0, []int32{1 << 30, 1 << 30, 1 << 30}, []int32{1 << 30, 1 << 30, 1}), Limits{}, "overflows"},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			opts := persistentTable()
			if c.name == "persistent id without resolver" {
				opts.Persistent = nil
			}
			opts.Limits = c.lim
			_, err := UnpickleBytes(c.data, opts)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, "pickle byte ") {
				t.Fatalf("error %q, want it to contain %q and a byte offset", msg, c.want)
			}
			if strings.Contains(msg, "internal error") {
				t.Fatalf("reached the last-resort recover: %v", msg)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("allocated %d MiB", grew>>20)
			}
		})
	}
}

// TestRefusalOffset checks that the reported offset is the opcode's.
func TestRefusalOffset(t *testing.T) {
	data := (&pk{}).proto(2).op(opNONE, opPOP).global("os", "system").stop()
	_, err := UnpickleBytes(data, UnpickleOptions{})
	if err == nil || !strings.Contains(err.Error(), "pickle byte 4 (opcode GLOBAL)") {
		t.Fatalf("%v", err)
	}
}

// TestSelfReference: a dict that contains itself unpickles (Python allows
// it) and Flatten stops at its depth limit instead of looping.
func TestSelfReference(t *testing.T) {
	data := []byte{0x80, 2, '}', 'q', 0, 'X', 1, 0, 0, 0, 'a', 'h', 0, 's', '.'}
	v, err := UnpickleBytes(data, UnpickleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Flatten(v); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Fatalf("Flatten: %v", err)
	}
}

// TestProtocol0Strings covers the text opcodes CPython 3 no longer writes
// (STRING with escapes) and UNICODE's raw-unicode-escape.
func TestProtocol0Strings(t *testing.T) {
	v, err := UnpickleBytes([]byte("(S'a\\'b\\n\\x41\\101'\nS\"q\"\nVcaf\\u00e9 \\U0001f600\nI01\nI00\nL12345678901234567890L\nF-2.5\nt."), UnpickleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := Tuple{"a'b\nAA", "q", "café 😀", true, false, nil, -2.5}
	got := v.(Tuple)
	want[5] = got[5]
	if canon(got) != canon(want) {
		t.Fatalf("got %s want %s", canon(got), canon(want))
	}
	if got[5].(*big.Int).String() != "12345678901234567890" {
		t.Fatalf("long %v", got[5])
	}
}

package pytorch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"
)

// This file is a Python pickle virtual machine (protocols 0 to 5) that can
// only build data. Python's unpickler imports whatever module.name a pickle
// names and calls it; this one resolves names against a fixed allowlist of
// torch rebuild functions, storage types and dtypes (torch.go) and stops
// with an error at the first other name, so a hostile checkpoint cannot
// run code. Every length a pickle states is checked against the bytes that
// remain and against Limits before anything is allocated.

// Limits bounds what one pickle may make the unpickler allocate. Every
// opcode pushes at most one value, so MaxObjects bounds the containers'
// total size as well as the number of values.
type Limits struct {
	// MaxObjects is the number of values a pickle may push in total.
	MaxObjects int
	// MaxStack is the number of values live on the stack and the mark
	// stack together.
	MaxStack int
	// MaxMarks is the nesting depth of MARK opcodes.
	MaxMarks int
	// MaxMemo is the number of memo entries.
	MaxMemo int
	// MaxBytes is the total size of all str and bytes values, and
	// separately of the bytes hashed to index dict keys.
	MaxBytes int64
}

// DefaultLimits are generous for a state dict (a 100-billion-parameter
// model's data.pkl is a few hundred thousand opcodes) and keep a hostile
// pickle's memory use to a few hundred MiB.
var DefaultLimits = Limits{
	MaxObjects: 1 << 22,
	MaxStack:   1 << 20,
	MaxMarks:   1 << 12,
	MaxMemo:    1 << 20,
	MaxBytes:   256 << 20,
}

// maxIntDigits caps decimal integer literals, as CPython does (4300), so
// big-number parsing stays linear.
const maxIntDigits = 4300

// maxLongBytes caps LONG4 integers; a torch pickle's largest integer is the
// 10-byte legacy magic number.
const maxLongBytes = 1024

// PickleError is an unpickling failure at a byte offset of the pickle.
type PickleError struct {
	// Offset is the position of the failing opcode from the start of the
	// pickle.
	Offset int64
	// Op is the opcode byte (0 when the input ended).
	Op byte
	// Msg says what was wrong.
	Msg string
}

// Error formats the failure with its offset and opcode name.
func (e *PickleError) Error() string {
	return fmt.Sprintf("pickle byte %d (opcode %s): %s", e.Offset, opName(e.Op), e.Msg)
}

// UnpickleOptions configure Unpickle.
type UnpickleOptions struct {
	// Limits bound allocation; the zero value means DefaultLimits.
	Limits Limits
	// Persistent resolves a persistent id (PERSID, BINPERSID). torch
	// pickles store references to tensor storages this way. Nil refuses
	// persistent ids.
	Persistent func(pid any) (any, error)
}

// Unpickle runs the pickle that starts at byte start of r (whose size is
// size) and returns the value it builds and the number of bytes it took up
// to and including its STOP opcode. Only data is built: a global outside
// the torch allowlist, and any call that is not an allowlisted rebuild
// function, is an error naming the global and the byte offset.
func Unpickle(r io.ReaderAt, start, size int64, opts UnpickleOptions) (v any, n int64, err error) {
	lim := opts.Limits
	if lim == (Limits{}) {
		lim = DefaultLimits
	}
	if start < 0 || start > size {
		return nil, 0, fmt.Errorf("pickle start %d outside input of %d bytes", start, size)
	}
	m := &vm{in: input{r: r, start: start, end: size, pos: start}, lim: lim, persistent: opts.Persistent,
		memo: map[uint64]any{}, hashBudget: int(min(lim.MaxBytes, math.MaxInt32))}
	defer func() {
		// Last resort: every input is bounds-checked, so a panic here is a
		// bug; report it as a failed pickle rather than crash the caller.
		if p := recover(); p != nil {
			v, n, err = nil, 0, &PickleError{Offset: m.opOff, Op: m.op, Msg: fmt.Sprintf("internal error: %v", p)}
		}
	}()
	v, err = m.run()
	return v, m.in.pos - start, err
}

// UnpickleBytes runs the pickle in data; see Unpickle.
func UnpickleBytes(data []byte, opts UnpickleOptions) (any, error) {
	v, _, err := Unpickle(bytesReaderAt(data), 0, int64(len(data)), opts)
	return v, err
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// input reads the pickle through a small window so that a legacy
// checkpoint's pickles can be parsed without reading the storages after
// them.
type input struct {
	r          io.ReaderAt
	start, end int64
	pos        int64
	buf        []byte
	bufAt      int64
}

const windowSize = 64 << 10

var errTruncated = errors.New("pickle ends before its STOP opcode")

func (in *input) remaining() int64 { return in.end - in.pos }

func (in *input) fill() error {
	n := in.end - in.pos
	if n > windowSize {
		n = windowSize
	}
	if n <= 0 {
		return errTruncated
	}
	if cap(in.buf) < int(n) {
		in.buf = make([]byte, windowSize)
	}
	in.buf = in.buf[:n]
	got, err := in.r.ReadAt(in.buf, in.pos)
	if got < int(n) {
		if err == nil || err == io.EOF {
			err = errTruncated
		}
		return err
	}
	in.bufAt = in.pos
	return nil
}

func (in *input) byte() (byte, error) {
	if in.pos < in.bufAt || in.pos >= in.bufAt+int64(len(in.buf)) {
		if err := in.fill(); err != nil {
			return 0, err
		}
	}
	b := in.buf[in.pos-in.bufAt]
	in.pos++
	return b, nil
}

// read returns the next n bytes in a fresh slice; n has been checked
// against the remaining input by the caller's length check.
func (in *input) read(n int64) ([]byte, error) {
	if n < 0 || n > in.remaining() {
		return nil, errTruncated
	}
	out := make([]byte, n)
	done := int64(0)
	if in.pos >= in.bufAt && in.pos < in.bufAt+int64(len(in.buf)) {
		done = int64(copy(out, in.buf[in.pos-in.bufAt:]))
	}
	if done < n {
		got, err := in.r.ReadAt(out[done:], in.pos+done)
		if int64(got) < n-done {
			if err == nil || err == io.EOF {
				err = errTruncated
			}
			return nil, err
		}
	}
	in.pos += n
	return out, nil
}

// fixed reads a small fixed-size field (at most 8 bytes) without allocating.
func (in *input) fixed(dst []byte) error {
	for i := range dst {
		b, err := in.byte()
		if err != nil {
			return err
		}
		dst[i] = b
	}
	return nil
}

// line reads up to and excluding the next '\n', at most max bytes.
func (in *input) line(max int64) ([]byte, error) {
	var out []byte
	for {
		b, err := in.byte()
		if err != nil {
			return nil, err
		}
		if b == '\n' {
			return out, nil
		}
		if int64(len(out)) >= max {
			return nil, fmt.Errorf("text line longer than %d bytes", max)
		}
		out = append(out, b)
	}
}

type vm struct {
	in         input
	lim        Limits
	persistent func(pid any) (any, error)

	stack     []any
	meta      [][]any
	live      int // values on stack and meta together
	memo      map[uint64]any
	objects   int
	bytesUsed int64
	// hashBudget is what dict and set keys may still hash, in bytes.
	hashBudget int
	proto      int

	op    byte
	opOff int64

	// storages created by persistent ids, in first-seen order.
	tensors []*TensorRef
}

func (m *vm) fail(format string, args ...any) error {
	return &PickleError{Offset: m.opOff - m.in.start, Op: m.op, Msg: fmt.Sprintf(format, args...)}
}

func (m *vm) push(v any) error {
	m.objects++
	if m.objects > m.lim.MaxObjects {
		return m.fail("more than %d values (limit)", m.lim.MaxObjects)
	}
	m.live++
	if m.live > m.lim.MaxStack {
		return m.fail("more than %d values on the stack (limit)", m.lim.MaxStack)
	}
	m.stack = append(m.stack, v)
	return nil
}

func (m *vm) pop() (any, error) {
	if len(m.stack) == 0 {
		return nil, m.fail("stack underflow")
	}
	v := m.stack[len(m.stack)-1]
	m.stack[len(m.stack)-1] = nil
	m.stack = m.stack[:len(m.stack)-1]
	m.live--
	return v, nil
}

func (m *vm) top() (any, error) {
	if len(m.stack) == 0 {
		return nil, m.fail("stack underflow")
	}
	return m.stack[len(m.stack)-1], nil
}

func (m *vm) mark() error {
	if len(m.meta) >= m.lim.MaxMarks {
		return m.fail("marks nested more than %d deep (limit)", m.lim.MaxMarks)
	}
	m.meta = append(m.meta, m.stack)
	m.stack = nil
	return nil
}

// popMark returns the values pushed since the last MARK and restores the
// stack below it.
func (m *vm) popMark() ([]any, error) {
	if len(m.meta) == 0 {
		return nil, m.fail("no MARK on the stack")
	}
	items := m.stack
	m.live -= len(items)
	m.stack = m.meta[len(m.meta)-1]
	m.meta[len(m.meta)-1] = nil
	m.meta = m.meta[:len(m.meta)-1]
	return items, nil
}

// length checks a length field before anything is allocated for it.
func (m *vm) length(n int64) error {
	if n < 0 {
		return m.fail("negative length %d", n)
	}
	if n > m.in.remaining() {
		return m.fail("length %d runs past the end of the pickle (%d bytes left)", n, m.in.remaining())
	}
	if n > m.lim.MaxBytes-m.bytesUsed {
		return m.fail("strings and bytes exceed %d bytes in total (limit)", m.lim.MaxBytes)
	}
	m.bytesUsed += n
	return nil
}

func (m *vm) u8() (int64, error) {
	b, err := m.in.byte()
	return int64(b), err
}

func (m *vm) u16() (int64, error) {
	var b [2]byte
	err := m.in.fixed(b[:])
	return int64(binary.LittleEndian.Uint16(b[:])), err
}

func (m *vm) u32() (int64, error) {
	var b [4]byte
	err := m.in.fixed(b[:])
	return int64(binary.LittleEndian.Uint32(b[:])), err
}

func (m *vm) i32() (int64, error) {
	var b [4]byte
	err := m.in.fixed(b[:])
	return int64(int32(binary.LittleEndian.Uint32(b[:]))), err
}

func (m *vm) u64() (int64, error) {
	var b [8]byte
	if err := m.in.fixed(b[:]); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint64(b[:])
	if v > math.MaxInt64 {
		return 0, m.fail("length %d is too large", v)
	}
	return int64(v), nil
}

// textLine reads a protocol-0 argument line; it is bounded by the string
// limits like any other string.
func (m *vm) textLine() ([]byte, error) {
	max := m.lim.MaxBytes - m.bytesUsed
	if r := m.in.remaining(); r < max {
		max = r
	}
	l, err := m.in.line(max)
	if err != nil {
		return nil, err
	}
	m.bytesUsed += int64(len(l))
	return l, nil
}

func (m *vm) sized(n int64) ([]byte, error) {
	if err := m.length(n); err != nil {
		return nil, err
	}
	return m.in.read(n)
}

func (m *vm) run() (any, error) {
	for {
		m.opOff = m.in.pos
		op, err := m.in.byte()
		if err != nil {
			m.op = 0
			return nil, m.fail("%v", err)
		}
		m.op = op
		if op == opSTOP {
			v, err := m.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		}
		if err := m.step(op); err != nil {
			var pe *PickleError
			if errors.As(err, &pe) {
				return nil, err
			}
			return nil, m.fail("%v", err)
		}
	}
}

// Opcodes, named as in CPython's pickle.py.
const (
	opMARK           = '('
	opSTOP           = '.'
	opPOP            = '0'
	opPOP_MARK       = '1'
	opDUP            = '2'
	opFLOAT          = 'F'
	opINT            = 'I'
	opBININT         = 'J'
	opBININT1        = 'K'
	opLONG           = 'L'
	opBININT2        = 'M'
	opNONE           = 'N'
	opPERSID         = 'P'
	opBINPERSID      = 'Q'
	opREDUCE         = 'R'
	opSTRING         = 'S'
	opBINSTRING      = 'T'
	opSHORT_BINSTR   = 'U'
	opUNICODE        = 'V'
	opBINUNICODE     = 'X'
	opAPPEND         = 'a'
	opBUILD          = 'b'
	opGLOBAL         = 'c'
	opDICT           = 'd'
	opEMPTY_DICT     = '}'
	opAPPENDS        = 'e'
	opGET            = 'g'
	opBINGET         = 'h'
	opINST           = 'i'
	opLONG_BINGET    = 'j'
	opLIST           = 'l'
	opEMPTY_LIST     = ']'
	opOBJ            = 'o'
	opPUT            = 'p'
	opBINPUT         = 'q'
	opLONG_BINPUT    = 'r'
	opSETITEM        = 's'
	opTUPLE          = 't'
	opEMPTY_TUPLE    = ')'
	opSETITEMS       = 'u'
	opBINFLOAT       = 'G'
	opPROTO          = 0x80
	opNEWOBJ         = 0x81
	opEXT1           = 0x82
	opEXT2           = 0x83
	opEXT4           = 0x84
	opTUPLE1         = 0x85
	opTUPLE2         = 0x86
	opTUPLE3         = 0x87
	opNEWTRUE        = 0x88
	opNEWFALSE       = 0x89
	opLONG1          = 0x8a
	opLONG4          = 0x8b
	opBINBYTES       = 'B'
	opSHORT_BINBYTES = 'C'
	opSHORT_BINUNI   = 0x8c
	opBINUNICODE8    = 0x8d
	opBINBYTES8      = 0x8e
	opEMPTY_SET      = 0x8f
	opADDITEMS       = 0x90
	opFROZENSET      = 0x91
	opNEWOBJ_EX      = 0x92
	opSTACK_GLOBAL   = 0x93
	opMEMOIZE        = 0x94
	opFRAME          = 0x95
	opBYTEARRAY8     = 0x96
	opNEXT_BUFFER    = 0x97
	opREADONLY_BUF   = 0x98
)

var opNames = map[byte]string{
	opMARK: "MARK", opSTOP: "STOP", opPOP: "POP", opPOP_MARK: "POP_MARK", opDUP: "DUP", opFLOAT: "FLOAT",
	opINT: "INT", opBININT: "BININT", opBININT1: "BININT1", opLONG: "LONG", opBININT2: "BININT2", opNONE: "NONE",
	opPERSID: "PERSID", opBINPERSID: "BINPERSID", opREDUCE: "REDUCE", opSTRING: "STRING", opBINSTRING: "BINSTRING",
	opSHORT_BINSTR: "SHORT_BINSTRING", opUNICODE: "UNICODE", opBINUNICODE: "BINUNICODE", opAPPEND: "APPEND",
	opBUILD: "BUILD", opGLOBAL: "GLOBAL", opDICT: "DICT", opEMPTY_DICT: "EMPTY_DICT", opAPPENDS: "APPENDS",
	opGET: "GET", opBINGET: "BINGET", opINST: "INST", opLONG_BINGET: "LONG_BINGET", opLIST: "LIST",
	opEMPTY_LIST: "EMPTY_LIST", opOBJ: "OBJ", opPUT: "PUT", opBINPUT: "BINPUT", opLONG_BINPUT: "LONG_BINPUT",
	opSETITEM: "SETITEM", opTUPLE: "TUPLE", opEMPTY_TUPLE: "EMPTY_TUPLE", opSETITEMS: "SETITEMS",
	opBINFLOAT: "BINFLOAT", opPROTO: "PROTO", opNEWOBJ: "NEWOBJ", opEXT1: "EXT1", opEXT2: "EXT2", opEXT4: "EXT4",
	opTUPLE1: "TUPLE1", opTUPLE2: "TUPLE2", opTUPLE3: "TUPLE3", opNEWTRUE: "NEWTRUE", opNEWFALSE: "NEWFALSE",
	opLONG1: "LONG1", opLONG4: "LONG4", opBINBYTES: "BINBYTES", opSHORT_BINBYTES: "SHORT_BINBYTES",
	opSHORT_BINUNI: "SHORT_BINUNICODE", opBINUNICODE8: "BINUNICODE8", opBINBYTES8: "BINBYTES8",
	opEMPTY_SET: "EMPTY_SET", opADDITEMS: "ADDITEMS", opFROZENSET: "FROZENSET", opNEWOBJ_EX: "NEWOBJ_EX",
	opSTACK_GLOBAL: "STACK_GLOBAL", opMEMOIZE: "MEMOIZE", opFRAME: "FRAME", opBYTEARRAY8: "BYTEARRAY8",
	opNEXT_BUFFER: "NEXT_BUFFER", opREADONLY_BUF: "READONLY_BUFFER",
}

func opName(op byte) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", op)
}

func (m *vm) step(op byte) error {
	switch op {
	case opMARK:
		return m.mark()
	case opPOP:
		if len(m.stack) == 0 {
			_, err := m.popMark()
			return err
		}
		_, err := m.pop()
		return err
	case opPOP_MARK:
		_, err := m.popMark()
		return err
	case opDUP:
		v, err := m.top()
		if err != nil {
			return err
		}
		return m.push(v)

	case opNONE:
		return m.push(nil)
	case opNEWTRUE:
		return m.push(true)
	case opNEWFALSE:
		return m.push(false)
	case opBININT:
		v, err := m.i32()
		if err != nil {
			return err
		}
		return m.push(v)
	case opBININT1:
		v, err := m.u8()
		if err != nil {
			return err
		}
		return m.push(v)
	case opBININT2:
		v, err := m.u16()
		if err != nil {
			return err
		}
		return m.push(v)
	case opINT:
		l, err := m.textLine()
		if err != nil {
			return err
		}
		switch string(l) {
		case "00":
			return m.push(false)
		case "01":
			return m.push(true)
		}
		v, err := parseDecimal(l)
		if err != nil {
			return err
		}
		return m.push(v)
	case opLONG:
		l, err := m.textLine()
		if err != nil {
			return err
		}
		if n := len(l); n > 0 && l[n-1] == 'L' {
			l = l[:n-1]
		}
		v, err := parseDecimal(l)
		if err != nil {
			return err
		}
		return m.push(v)
	case opLONG1, opLONG4:
		var n int64
		var err error
		if op == opLONG1 {
			n, err = m.u8()
		} else {
			n, err = m.i32()
		}
		if err != nil {
			return err
		}
		if n > maxLongBytes {
			return m.fail("integer of %d bytes is too large (limit %d)", n, maxLongBytes)
		}
		b, err := m.sized(n)
		if err != nil {
			return err
		}
		return m.push(decodeLong(b))
	case opFLOAT:
		l, err := m.textLine()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(string(l), 64)
		if err != nil {
			return fmt.Errorf("bad FLOAT literal %q", truncate(string(l)))
		}
		return m.push(f)
	case opBINFLOAT:
		var b [8]byte
		if err := m.in.fixed(b[:]); err != nil {
			return err
		}
		return m.push(math.Float64frombits(binary.BigEndian.Uint64(b[:])))

	case opSTRING:
		l, err := m.textLine()
		if err != nil {
			return err
		}
		s, err := decodeStringRepr(l)
		if err != nil {
			return err
		}
		return m.push(s)
	case opBINSTRING, opSHORT_BINSTR, opBINUNICODE, opSHORT_BINUNI, opBINUNICODE8:
		var n int64
		var err error
		switch op {
		case opBINSTRING:
			n, err = m.i32()
		case opSHORT_BINSTR, opSHORT_BINUNI:
			n, err = m.u8()
		case opBINUNICODE:
			n, err = m.u32()
		default:
			n, err = m.u64()
		}
		if err != nil {
			return err
		}
		b, err := m.sized(n)
		if err != nil {
			return err
		}
		return m.push(string(b))
	case opUNICODE:
		l, err := m.textLine()
		if err != nil {
			return err
		}
		s, err := decodeRawUnicodeEscape(l)
		if err != nil {
			return err
		}
		return m.push(s)
	case opBINBYTES, opSHORT_BINBYTES, opBINBYTES8, opBYTEARRAY8:
		var n int64
		var err error
		switch op {
		case opBINBYTES:
			n, err = m.u32()
		case opSHORT_BINBYTES:
			n, err = m.u8()
		default:
			n, err = m.u64()
		}
		if err != nil {
			return err
		}
		b, err := m.sized(n)
		if err != nil {
			return err
		}
		return m.push(b)

	case opEMPTY_TUPLE:
		return m.push(Tuple{})
	case opTUPLE:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.push(Tuple(items))
	case opTUPLE1, opTUPLE2, opTUPLE3:
		n := int(op-opTUPLE1) + 1
		if len(m.stack) < n {
			return m.fail("stack underflow")
		}
		t := make(Tuple, n)
		copy(t, m.stack[len(m.stack)-n:])
		for i := 0; i < n; i++ {
			if _, err := m.pop(); err != nil {
				return err
			}
		}
		return m.push(t)
	case opEMPTY_LIST:
		return m.push(&List{})
	case opLIST:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.push(&List{Items: items})
	case opAPPEND:
		v, err := m.pop()
		if err != nil {
			return err
		}
		return m.appendTo([]any{v})
	case opAPPENDS:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.appendTo(items)
	case opEMPTY_DICT:
		return m.push(NewDict())
	case opDICT:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		d := NewDict()
		if err := m.setItems(d, items); err != nil {
			return err
		}
		return m.push(d)
	case opSETITEM:
		v, err := m.pop()
		if err != nil {
			return err
		}
		k, err := m.pop()
		if err != nil {
			return err
		}
		return m.setItemsOnTop([]any{k, v})
	case opSETITEMS:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.setItemsOnTop(items)
	case opEMPTY_SET:
		return m.push(&Set{})
	case opADDITEMS:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		t, err := m.top()
		if err != nil {
			return err
		}
		s, ok := t.(*Set)
		if !ok {
			return m.fail("ADDITEMS on a %s", typeName(t))
		}
		for _, it := range items {
			if _, err := keyOf(it, &m.hashBudget); err != nil {
				return err
			}
		}
		s.Items = append(s.Items, items...)
		return nil
	case opFROZENSET:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		for _, it := range items {
			if _, err := keyOf(it, &m.hashBudget); err != nil {
				return err
			}
		}
		return m.push(&Set{Items: items})

	case opPUT, opBINPUT, opLONG_BINPUT:
		i, err := m.memoIndex(op)
		if err != nil {
			return err
		}
		return m.put(i)
	case opMEMOIZE:
		return m.put(uint64(len(m.memo)))
	case opGET, opBINGET, opLONG_BINGET:
		i, err := m.memoIndex(op)
		if err != nil {
			return err
		}
		return m.get(i)

	case opPROTO:
		v, err := m.u8()
		if err != nil {
			return err
		}
		if v > 5 {
			return m.fail("unsupported pickle protocol %d", v)
		}
		m.proto = int(v)
		return nil
	case opFRAME:
		n, err := m.u64()
		if err != nil {
			return err
		}
		if n > m.in.remaining() {
			return m.fail("frame of %d bytes runs past the end of the pickle (%d bytes left)", n, m.in.remaining())
		}
		return nil

	case opGLOBAL:
		mod, err := m.textLine()
		if err != nil {
			return err
		}
		name, err := m.textLine()
		if err != nil {
			return err
		}
		g, err := m.findGlobal(string(mod), string(name))
		if err != nil {
			return err
		}
		return m.push(g)
	case opSTACK_GLOBAL:
		name, err := m.pop()
		if err != nil {
			return err
		}
		mod, err := m.pop()
		if err != nil {
			return err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return m.fail("STACK_GLOBAL needs two strings, got %s and %s", typeName(mod), typeName(name))
		}
		g, err := m.findGlobal(ms, ns)
		if err != nil {
			return err
		}
		return m.push(g)
	case opREDUCE:
		args, err := m.pop()
		if err != nil {
			return err
		}
		fn, err := m.pop()
		if err != nil {
			return err
		}
		t, ok := args.(Tuple)
		if !ok {
			return m.fail("REDUCE arguments are a %s, not a tuple", typeName(args))
		}
		v, err := m.call(fn, t)
		if err != nil {
			return err
		}
		return m.push(v)
	case opNEWOBJ, opNEWOBJ_EX:
		if op == opNEWOBJ_EX {
			kw, err := m.pop()
			if err != nil {
				return err
			}
			if d, ok := kw.(*Dict); !ok || d.Len() != 0 {
				return m.fail("NEWOBJ_EX with keyword arguments (%s)", typeName(kw))
			}
		}
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		t, ok := args.(Tuple)
		if !ok {
			return m.fail("NEWOBJ arguments are a %s, not a tuple", typeName(args))
		}
		v, err := m.instantiate(cls, t)
		if err != nil {
			return err
		}
		return m.push(v)
	case opINST:
		mod, err := m.textLine()
		if err != nil {
			return err
		}
		name, err := m.textLine()
		if err != nil {
			return err
		}
		g, err := m.findGlobal(string(mod), string(name))
		if err != nil {
			return err
		}
		args, err := m.popMark()
		if err != nil {
			return err
		}
		v, err := m.instantiate(g, Tuple(args))
		if err != nil {
			return err
		}
		return m.push(v)
	case opOBJ:
		items, err := m.popMark()
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return m.fail("OBJ without a class")
		}
		v, err := m.instantiate(items[0], Tuple(items[1:]))
		if err != nil {
			return err
		}
		return m.push(v)
	case opBUILD:
		state, err := m.pop()
		if err != nil {
			return err
		}
		inst, err := m.top()
		if err != nil {
			return err
		}
		return m.build(inst, state)

	case opPERSID, opBINPERSID:
		var pid any
		if op == opPERSID {
			l, err := m.textLine()
			if err != nil {
				return err
			}
			pid = string(l)
		} else {
			var err error
			if pid, err = m.pop(); err != nil {
				return err
			}
		}
		if m.persistent == nil {
			return m.fail("persistent id %s with no storage resolver", describe(pid))
		}
		v, err := m.persistent(pid)
		if err != nil {
			return err
		}
		return m.push(v)

	case opEXT1, opEXT2, opEXT4:
		return m.fail("copyreg extension codes are not supported (they name arbitrary classes)")
	case opNEXT_BUFFER:
		return m.fail("out-of-band buffers are not supported")
	case opREADONLY_BUF:
		t, err := m.top()
		if err != nil {
			return err
		}
		if _, ok := t.([]byte); !ok {
			return m.fail("READONLY_BUFFER on a %s", typeName(t))
		}
		return nil
	}
	return m.fail("unknown opcode")
}

func (m *vm) appendTo(items []any) error {
	t, err := m.top()
	if err != nil {
		return err
	}
	l, ok := t.(*List)
	if !ok {
		return m.fail("APPEND to a %s", typeName(t))
	}
	l.Items = append(l.Items, items...)
	return nil
}

func (m *vm) setItemsOnTop(items []any) error {
	t, err := m.top()
	if err != nil {
		return err
	}
	d, ok := t.(*Dict)
	if !ok {
		return m.fail("SETITEM on a %s", typeName(t))
	}
	return m.setItems(d, items)
}

func (m *vm) setItems(d *Dict, items []any) error {
	if len(items)%2 != 0 {
		return m.fail("odd number of items (%d) for a dict", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1], &m.hashBudget); err != nil {
			return err
		}
	}
	return nil
}

// memoIndex reads the memo index operand of a PUT or GET opcode: a
// decimal line (PUT, GET), one byte (BINPUT, BINGET) or four
// (LONG_BINPUT, LONG_BINGET).
func (m *vm) memoIndex(op byte) (uint64, error) {
	switch op {
	case opBINPUT, opBINGET:
		i, err := m.u8()
		return uint64(i), err
	case opLONG_BINPUT, opLONG_BINGET:
		i, err := m.u32()
		return uint64(i), err
	}
	l, err := m.textLine()
	if err != nil {
		return 0, err
	}
	i, err := strconv.ParseInt(string(l), 10, 64)
	if err != nil || i < 0 {
		return 0, m.fail("bad %s index %q", opName(op), truncate(string(l)))
	}
	return uint64(i), nil
}

func (m *vm) put(i uint64) error {
	v, err := m.top()
	if err != nil {
		return err
	}
	if _, ok := m.memo[i]; !ok && len(m.memo) >= m.lim.MaxMemo {
		return m.fail("more than %d memo entries (limit)", m.lim.MaxMemo)
	}
	m.memo[i] = v
	return nil
}

func (m *vm) get(i uint64) error {
	v, ok := m.memo[i]
	if !ok {
		return m.fail("memo entry %d was never stored", i)
	}
	return m.push(v)
}

// parseDecimal parses a protocol-0 integer literal.
func parseDecimal(l []byte) (any, error) {
	if len(l) > maxIntDigits {
		return nil, fmt.Errorf("integer literal of %d digits exceeds the limit of %d", len(l), maxIntDigits)
	}
	s := string(l)
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v, nil
	}
	b, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, fmt.Errorf("bad integer literal %q", truncate(s))
	}
	return normInt(b), nil
}

// decodeLong decodes a little-endian two's-complement integer.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return normInt(v)
}

func normInt(b *big.Int) any {
	if b.IsInt64() {
		return b.Int64()
	}
	return b
}

// decodeStringRepr decodes a protocol-0 STRING argument: a Python 2 str
// repr in single or double quotes with backslash escapes.
func decodeStringRepr(l []byte) (string, error) {
	if len(l) < 2 || (l[0] != '\'' && l[0] != '"') || l[len(l)-1] != l[0] {
		return "", fmt.Errorf("STRING argument %q is not quoted", truncate(string(l)))
	}
	s := l[1 : len(l)-1]
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(s) {
			return "", fmt.Errorf("STRING argument ends in a backslash")
		}
		switch e := s[i]; e {
		case '\\', '\'', '"':
			out = append(out, e)
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'a':
			out = append(out, 7)
		case 'b':
			out = append(out, 8)
		case 'f':
			out = append(out, 12)
		case 'v':
			out = append(out, 11)
		case '\n':
		case 'x':
			if i+2 >= len(s) {
				return "", fmt.Errorf("truncated \\x escape in STRING")
			}
			v, err := strconv.ParseUint(string(s[i+1:i+3]), 16, 8)
			if err != nil {
				return "", fmt.Errorf("bad \\x escape in STRING")
			}
			out = append(out, byte(v))
			i += 2
		default:
			if e >= '0' && e <= '7' {
				v, j := 0, i
				for ; j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7'; j++ {
					v = v*8 + int(s[j]-'0')
				}
				out = append(out, byte(v))
				i = j - 1
			} else {
				out = append(out, '\\', e)
			}
		}
	}
	return string(out), nil
}

// decodeRawUnicodeEscape decodes Python's raw-unicode-escape codec:
// \uXXXX and \UXXXXXXXX escapes, every other byte a Latin-1 code point.
func decodeRawUnicodeEscape(l []byte) (string, error) {
	out := make([]byte, 0, len(l))
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c == '\\' && i+1 < len(l) && (l[i+1] == 'u' || l[i+1] == 'U') {
			n := 4
			if l[i+1] == 'U' {
				n = 8
			}
			if i+2+n > len(l) {
				return "", fmt.Errorf("truncated \\%c escape in UNICODE", l[i+1])
			}
			v, err := strconv.ParseUint(string(l[i+2:i+2+n]), 16, 32)
			if err != nil || v > utf8.MaxRune {
				return "", fmt.Errorf("bad \\%c escape in UNICODE", l[i+1])
			}
			out = utf8.AppendRune(out, rune(v))
			i += 1 + n
			continue
		}
		out = utf8.AppendRune(out, rune(c))
	}
	return string(out), nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// describe renders a value briefly for error messages, never recursing
// more than one level.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(truncate(v))
	case int64:
		return strconv.FormatInt(v, 10)
	case Tuple:
		s := "("
		for i, e := range v {
			if i == 4 {
				s += ", ..."
				break
			}
			if i > 0 {
				s += ", "
			}
			switch e := e.(type) {
			case string, int64:
				s += describe(e)
			default:
				s += typeName(e)
			}
		}
		return s + ")"
	}
	return typeName(v)
}

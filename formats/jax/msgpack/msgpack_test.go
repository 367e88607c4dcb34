package msgpack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
)

// enc is a tiny msgpack writer for building test documents.
type enc struct{ b []byte }

func (e *enc) str(s string) *enc {
	if len(s) < 32 {
		e.b = append(e.b, 0xa0|byte(len(s)))
	} else {
		e.b = append(e.b, 0xd9, byte(len(s)))
	}
	e.b = append(e.b, s...)
	return e
}
func (e *enc) mapN(n int) *enc    { e.b = append(e.b, 0x80|byte(n)); return e }
func (e *enc) raw(b ...byte) *enc { e.b = append(e.b, b...); return e }

// ndarray appends ext 1 (or 3) holding (shape, dtype, data).
func (e *enc) ndarray(typ byte, shape []int64, dtype string, data []byte) *enc {
	p := &enc{}
	p.raw(0x93, 0x90|byte(len(shape)))
	for _, d := range shape {
		p.raw(0xcd, byte(d>>8), byte(d))
	}
	p.str(dtype)
	p.raw(0xc4, byte(len(data)))
	p.raw(data...)
	e.raw(0xc7, byte(len(p.b)), typ)
	e.raw(p.b...)
	return e
}

func parse(b []byte) (*Node, error) { return Parse(bytes.NewReader(b), int64(len(b)), "test.msgpack") }

func sample() []byte {
	e := &enc{}
	e.mapN(5)
	e.str("params").mapN(2)
	e.str("w").ndarray(1, []int64{2, 3}, "bfloat16", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	e.str("b").ndarray(1, []int64{3}, "float32", make([]byte, 12))
	e.str("step").raw(0xcd, 0x01, 0x00)
	e.str("scalar").ndarray(3, nil, "int32", []byte{7, 0, 0, 0})
	e.str("list").raw(0x93, 0xc0, 0xc3, 0xcb)
	e.b = binary.BigEndian.AppendUint64(e.b, math.Float64bits(2.5))
	// A chunked array: 5 int16 values in two chunks.
	e.str("big").mapN(3)
	e.str("__msgpack_chunked_array__").raw(0xc3)
	e.str("shape").mapN(1).str("0").raw(0x05)
	e.str("chunks").mapN(2)
	e.str("1").ndarray(1, []int64{2}, "int16", []byte{7, 0, 8, 0})
	e.str("0").ndarray(1, []int64{3}, "int16", []byte{4, 0, 5, 0, 6, 0})
	return e.b
}

func TestParse(t *testing.T) {
	b := sample()
	root, err := parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if s := root.Get("step"); s == nil || s.Kind != Int || s.Int != 256 {
		t.Errorf("step = %+v", s)
	}
	l := root.Get("list")
	if l.Kind != List || len(l.List) != 3 || l.List[0].Kind != Nil || !l.List[1].Bool || l.List[2].Float != 2.5 {
		t.Errorf("list = %+v", l)
	}
	arrs, err := Arrays(root, "test.msgpack")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, a := range arrs {
		paths = append(paths, strings.Join(a.Path, "/"))
	}
	if !reflect.DeepEqual(paths, []string{"params/w", "params/b", "scalar", "big"}) {
		t.Fatalf("paths %q", paths)
	}
	w := arrs[0]
	if !reflect.DeepEqual(w.Shape, []int64{2, 3}) || w.DType != "bfloat16" || w.Size() != 12 {
		t.Errorf("w = %+v", w)
	}
	got := make([]byte, 12)
	w.Reader(bytes.NewReader(b)).ReadAt(got, 0)
	if !bytes.Equal(got, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}) {
		t.Errorf("w data %v", got)
	}
	big := arrs[3]
	if !reflect.DeepEqual(big.Shape, []int64{5}) || big.DType != "int16" || len(big.Segments) != 2 {
		t.Fatalf("big = %+v", big)
	}
	r := big.Reader(bytes.NewReader(b))
	all := make([]byte, 10)
	if n, err := r.ReadAt(all, 0); n != 10 || err != nil {
		t.Fatal(n, err)
	}
	if !bytes.Equal(all, []byte{4, 0, 5, 0, 6, 0, 7, 0, 8, 0}) {
		t.Errorf("big data %v", all)
	}
	mid := make([]byte, 4)
	if n, err := r.ReadAt(mid, 5); n != 4 || err != nil || !bytes.Equal(mid, []byte{0, 7, 0, 8}) {
		t.Errorf("straddling read %v %d %v", mid, n, err)
	}
	if n, err := r.ReadAt(mid, 8); n != 2 || err != io.EOF {
		t.Errorf("read past end: %d %v", n, err)
	}
}

func TestHostile(t *testing.T) {
	b := sample()
	// Every truncation fails with an offset, never panics.
	for i := 0; i < len(b); i++ {
		_, err := parse(b[:i])
		var e *Error
		if !errors.As(err, &e) || e.File != "test.msgpack" {
			t.Fatalf("truncated to %d: %v", i, err)
		}
	}
	for name, doc := range map[string][]byte{
		"huge map":        {0xdf, 0xff, 0xff, 0xff, 0xff},
		"huge list":       {0xdd, 0x7f, 0xff, 0xff, 0xff, 0xc0},
		"huge bin":        {0xc6, 0x7f, 0xff, 0xff, 0xff},
		"huge ext":        {0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01},
		"bad type":        {0xc1},
		"trailing":        {0xc0, 0xc0},
		"deep":            bytes.Repeat([]byte{0x91}, 100),
		"bad key":         {0x81, 0xc0, 0xc0},
		"short ndarray":   (&enc{}).ndarray(1, []int64{4}, "float32", make([]byte, 12)).b,
		"ndarray not 3":   {0xd5, 0x01, 0x91, 0x90},
		"negative dim":    {0xc7, 0x07, 0x01, 0x93, 0x91, 0xff, 0xa0, 0xc4, 0x00},
		"dtype not name":  {0xc7, 0x05, 0x01, 0x93, 0x90, 0xc0, 0xc4, 0x00},
		"ext overruns":    {0xc7, 0x09, 0x01, 0x93, 0x90, 0xa0, 0xc4, 0x00},
		"chunked no data": (&enc{}).mapN(1).str("__msgpack_chunked_array__").raw(0xc3).b,
	} {
		root, err := parse(doc)
		if err == nil {
			_, err = Arrays(root, "test.msgpack")
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "test.msgpack") {
			t.Errorf("%s: error without the file: %v", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample())
	f.Add([]byte{0x80})
	f.Add((&enc{}).mapN(1).str("x").ndarray(1, []int64{1}, "float32", []byte{0, 0, 128, 63}).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		root, err := parse(b)
		if err != nil {
			return
		}
		arrs, err := Arrays(root, "fuzz")
		if err != nil {
			return
		}
		for _, a := range arrs {
			// Every recorded byte range lies inside the input.
			for _, s := range a.Segments {
				if s.Offset < 0 || s.Length < 0 || s.Offset+s.Length > int64(len(b)) {
					t.Fatalf("segment %+v outside %d bytes", s, len(b))
				}
			}
			buf := make([]byte, min(a.Size(), 1<<16))
			a.Reader(bytes.NewReader(b)).ReadAt(buf, 0)
		}
	})
}

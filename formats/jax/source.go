package jax

import (
	"fmt"
	"io"
	"sync"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Memory bounds of the transposing source: the output rows it computes at
// once (a band) and the input it reads at once (a strip).
var (
	bandBytes  int64 = 32 << 20
	stripBytes int64 = 4 << 20
)

// transposed presents batch row-major matrices of rows×cols elements,
// stored one after another from byte base of src, as their transposes
// stacked: batch*cols output rows of rows elements each. Output row
// b*cols+c holds column c of matrix b. It computes bands of output rows
// on demand, reading the input strip by strip, so memory stays within
// bandBytes+stripBytes whatever the tensor's size.
type transposed struct {
	src                io.ReaderAt
	base               int64
	batch, rows, cols  int64
	es                 int64
	bandRows           int64
	release            func()
	where              string // the parameter, for errors
	mu                 sync.Mutex
	bandB, bandC0, bC1 int64 // current band: matrix, columns [bandC0, bC1)
	buf, strip         []byte
}

func newTransposed(p *param, base, batch, rows, cols int64) *transposed {
	es := int64(p.dtype.TypeSize())
	br := max(1, bandBytes/(rows*es))
	return &transposed{src: p.src, base: base, batch: batch, rows: rows, cols: cols, es: es, bandRows: br, release: p.release, where: p.path + " (" + p.where + ")", bandB: -1}
}

// size is the byte length of the output.
func (t *transposed) size() int64 { return t.batch * t.cols * t.rows * t.es }

// ReadAt implements io.ReaderAt over the transposed bytes.
func (t *transposed) ReadAt(p []byte, off int64) (int, error) {
	size := t.size()
	if off < 0 {
		return 0, fmt.Errorf("jax: negative offset %d", off)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rowBytes := t.rows * t.es
	done := 0
	for done < len(p) && off < size {
		r := off / rowBytes
		b, c := r/t.cols, r%t.cols
		if err := t.band(b, c); err != nil {
			return done, err
		}
		// Offset of off within the band buffer.
		in := off - (b*t.cols+t.bandC0)*rowBytes
		n := copy(p[done:], t.buf[in:])
		done += n
		off += int64(n)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// band makes the band holding column c of matrix b current.
func (t *transposed) band(b, c int64) error {
	if b == t.bandB && c >= t.bandC0 && c < t.bC1 {
		return nil
	}
	c0 := c / t.bandRows * t.bandRows
	c1 := min(c0+t.bandRows, t.cols)
	width := c1 - c0
	need := width * t.rows * t.es
	if int64(cap(t.buf)) < need {
		t.buf = make([]byte, need)
	}
	t.buf = t.buf[:need]
	inRow := t.cols * t.es
	stripRows := max(1, stripBytes/inRow)
	if int64(cap(t.strip)) < stripRows*inRow {
		t.strip = make([]byte, min(stripRows, t.rows)*inRow)
	}
	t.bandB = -1 // invalid until filled
	for i0 := int64(0); i0 < t.rows; i0 += stripRows {
		i1 := min(i0+stripRows, t.rows)
		s := t.strip[:(i1-i0)*inRow]
		at := t.base + (b*t.rows+i0)*inRow
		if n, err := t.src.ReadAt(s, at); n < len(s) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%s: reading rows [%d,%d) of matrix %d at byte %d: %w", t.where, i0, i1, b, at, err)
		}
		t.scatter(s, i0, i1, c0, c1)
	}
	t.bandB, t.bandC0, t.bC1 = b, c0, c1
	return nil
}

// scatter copies columns [c0, c1) of input rows [i0, i1) (held in strip)
// into the band. It goes tile by tile through a small scratch block, so
// that both the strided reads and the writes stay in cache (row strides
// are often powers of two, which defeat the cache when walked directly).
func (t *transposed) scatter(strip []byte, i0, i1, c0, c1 int64) {
	const tile = 32
	var scratch [tile * tile * 8]byte
	es, inRow := t.es, t.cols*t.es
	for ib := i0; ib < i1; ib += tile {
		ie := min(ib+tile, i1)
		h := ie - ib
		for cb := c0; cb < c1; cb += tile {
			ce := min(cb+tile, c1)
			w := ce - cb
			if es > 8 {
				for cc := cb; cc < ce; cc++ {
					for i := ib; i < ie; i++ {
						d := ((cc-c0)*t.rows + i) * es
						copy(t.buf[d:d+es], strip[(i-i0)*inRow+cc*es:])
					}
				}
				continue
			}
			// Rows in: scratch[c][i] = strip[i][c].
			for i := int64(0); i < h; i++ {
				row := strip[(ib-i0+i)*inRow+cb*es : (ib-i0+i)*inRow+ce*es]
				if es == 2 {
					for c := int64(0); c < w; c++ {
						o := (c*tile + i) * 2
						scratch[o], scratch[o+1] = row[2*c], row[2*c+1]
					}
				} else {
					for c := int64(0); c < w; c++ {
						copy(scratch[(c*tile+i)*es:(c*tile+i+1)*es], row[c*es:])
					}
				}
			}
			// Columns out: contiguous runs of h elements.
			for c := int64(0); c < w; c++ {
				d := ((cb+c-c0)*t.rows + ib) * es
				copy(t.buf[d:d+h*es], scratch[c*tile*es:(c*tile+h)*es])
			}
		}
	}
}

// Release drops the band and strip buffers (ir.Releaser) and tells the
// underlying source.
func (t *transposed) Release() {
	t.mu.Lock()
	t.buf, t.strip, t.bandB = nil, nil, -1
	t.mu.Unlock()
	if t.release != nil {
		t.release()
	}
}

// window is a byte range of a parameter; it names the parameter in read
// errors and forwards Release.
type window struct {
	*io.SectionReader
	release func()
	where   string
}

// ReadAt reads from the range, naming the parameter in errors.
func (w window) ReadAt(p []byte, off int64) (int, error) {
	n, err := w.SectionReader.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s at byte %d: %w", w.where, off, err)
	}
	return n, err
}

// Release implements ir.Releaser.
func (w window) Release() {
	if w.release != nil {
		w.release()
	}
}

var (
	_ ir.Releaser = (*transposed)(nil)
	_ ir.Releaser = window{}
)

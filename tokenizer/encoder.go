package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/gemmaconv/gemmaconv/ir"
)

// spaceSymbol is SentencePiece's escaped whitespace, U+2581 LOWER ONE
// EIGHTH BLOCK.
const spaceSymbol = "\u2581"

// unkSurface is what SentencePiece decodes <unk> to (TrainerSpec's default
// unk_surface, " ⁇ ").
const unkSurface = " \u2047 "

// Encoder encodes and decodes text with a SentencePiece BPE vocabulary,
// reproducing Google's SentencePiece (normalizer.cc, bpe_model.cc and
// sentencepiece_processor.cc) for identity-normalized models such as
// Gemma's. An Encoder is immutable and safe for concurrent use.
type Encoder struct {
	t *ir.Tokenizer
	// pieces holds NORMAL, USER_DEFINED and UNUSED pieces (what BPE may
	// merge into); reserved holds CONTROL, UNKNOWN and BYTE pieces.
	pieces   map[string]int32
	reserved map[string]int32
	unk      int32
	byteID   [256]int32
	// shadow maps the id of a normal piece whose text is also a reserved
	// piece to that reserved id: SentencePiece decodes ids through their
	// text, and PieceToId prefers reserved pieces. Nil when none exist.
	shadow map[int32]int32
	user   prefixMatcher
	// inner over-approximates the adjacent character pairs inside
	// mergeable pieces; segment says bpe may cut where inner has no pair.
	inner   pairSet
	segment bool
}

// New builds an Encoder for a SentencePiece BPE tokenizer (Model "llama").
// It rejects vocabularies SentencePiece itself would refuse to load
// (empty or duplicate pieces, no or several <unk>, byte pieces without
// byte fallback or byte fallback without all 256 byte pieces) and the
// features it does not implement: UNIGRAM models and normalizers other
// than identity.
func New(t *ir.Tokenizer) (*Encoder, error) {
	if t == nil {
		return nil, errors.New("tokenizer: nil tokenizer")
	}
	switch t.Model {
	case "llama":
	case ModelUnigram:
		return nil, errors.New("tokenizer: SentencePiece UNIGRAM models are not supported by the encoder (only BPE, as Gemma uses)")
	default:
		return nil, fmt.Errorf("tokenizer: model %q is not a SentencePiece BPE tokenizer (want \"llama\")", t.Model)
	}
	if t.Normalizer != "" && t.Normalizer != "identity" {
		return nil, fmt.Errorf("tokenizer: normalizer %q is not supported (only identity, as Gemma uses)", t.Normalizer)
	}
	n := len(t.Pieces)
	if len(t.Scores) != n || len(t.Types) != n {
		return nil, fmt.Errorf("tokenizer: %d pieces but %d scores and %d types", n, len(t.Scores), len(t.Types))
	}
	if n == 0 || n > maxPieces {
		return nil, fmt.Errorf("tokenizer: %d pieces", n)
	}
	e := &Encoder{
		t:        t,
		pieces:   make(map[string]int32, n),
		reserved: make(map[string]int32),
		unk:      -1,
	}
	for i := range e.byteID {
		e.byteID[i] = -1
	}
	var user []string
	for i, p := range t.Pieces {
		id := int32(i)
		if p == "" {
			return nil, fmt.Errorf("tokenizer: piece %d is empty", i)
		}
		m := e.reserved
		switch t.Types[i] {
		case ir.TokenNormal, ir.TokenUserDefined, ir.TokenUnused:
			m = e.pieces
		case ir.TokenUnknown:
			if e.unk >= 0 {
				return nil, fmt.Errorf("tokenizer: pieces %d and %d are both <unk>", e.unk, i)
			}
			e.unk = id
		case ir.TokenControl:
		case ir.TokenByte:
			if !t.ByteFallback {
				return nil, fmt.Errorf("tokenizer: byte piece %q (id %d) but byte fallback is off", p, i)
			}
			b, ok := pieceToByte(p)
			if !ok {
				return nil, fmt.Errorf("tokenizer: byte piece %q (id %d) is not <0xNN>", p, i)
			}
			e.byteID[b] = id
		default:
			return nil, fmt.Errorf("tokenizer: piece %d has unknown type %d", i, t.Types[i])
		}
		if _, dup := m[p]; dup {
			return nil, fmt.Errorf("tokenizer: piece %q (id %d) is already defined", p, i)
		}
		m[p] = id
		if t.Types[i] == ir.TokenUserDefined {
			user = append(user, p)
		}
	}
	if e.unk < 0 {
		return nil, errors.New("tokenizer: no piece has type UNKNOWN")
	}
	if t.ByteFallback {
		for b, id := range e.byteID {
			if id < 0 {
				return nil, fmt.Errorf("tokenizer: byte fallback is on but piece <0x%02X> is missing", b)
			}
		}
	}
	for p, id := range e.reserved {
		if nid, ok := e.pieces[p]; ok {
			if e.shadow == nil {
				e.shadow = make(map[int32]int32)
			}
			e.shadow[nid] = id
		}
	}
	e.user = newPrefixMatcher(user)
	e.initSegments()
	return e, nil
}

// Tokenizer returns the vocabulary the Encoder was built from.
func (e *Encoder) Tokenizer() *ir.Tokenizer { return e.t }

// Piece returns the vocabulary piece of id, or "" when id is out of range.
func (e *Encoder) Piece(id int32) string {
	if id < 0 || int(id) >= len(e.t.Pieces) {
		return ""
	}
	return e.t.Pieces[id]
}

// Encode returns SentencePiece's EncodeAsIds(text): no BOS or EOS (callers
// add them as the tokenizer's AddBOS/AddEOS say).
func (e *Encoder) Encode(text string) []int32 {
	var ids []int32
	e.encode(text, func(_ string, id int32) { ids = append(ids, id) })
	return ids
}

// EncodePieces returns SentencePiece's EncodeAsPieces(text): the pieces of
// Encode's ids, except that without byte fallback a run of unknown
// characters is returned as its text rather than as "<unk>".
func (e *Encoder) EncodePieces(text string) []string {
	var pieces []string
	e.encode(text, func(p string, _ int32) { pieces = append(pieces, p) })
	return pieces
}

// encode calls emit with every output piece and id, in order, as
// SentencePieceProcessor::Encode and PopulateSentencePieceText produce them.
func (e *Encoder) encode(text string, emit func(piece string, id int32)) {
	norm := e.normalize(text)
	prevUnk := false
	unkRun := -1 // start in norm of the unknown run being accumulated
	unkEnd := 0
	flushUnk := func() {
		if unkRun >= 0 {
			emit(norm[unkRun:unkEnd], e.unk)
			unkRun = -1
		}
	}
	e.bpe(norm, func(start, end int, id int32) {
		w := norm[start:end]
		typ := e.t.Types[id]
		isUnk := typ == ir.TokenUnknown
		switch {
		case typ == ir.TokenControl:
			flushUnk()
			emit(w, id)
		case isUnk && e.t.ByteFallback:
			flushUnk()
			for i := 0; i < len(w); i++ {
				b := w[i]
				emit(e.t.Pieces[e.byteID[b]], e.byteID[b])
			}
		case isUnk:
			// A run of unknown pieces becomes one <unk>, as SentencePiece
			// merges them for the decoder.
			if prevUnk && unkRun >= 0 {
				unkEnd = end
			} else {
				flushUnk()
				unkRun, unkEnd = start, end
			}
		default:
			flushUnk()
			emit(w, id)
		}
		prevUnk = isUnk
	})
	flushUnk()
}

// normalize is Normalizer::Normalize for a spec without a precompiled
// charsmap: user-defined symbols pass through whole, malformed UTF-8 bytes
// become U+FFFD, spaces become U+2581, and add_dummy_prefix and
// remove_extra_whitespaces apply as set.
func (e *Encoder) normalize(in string) string {
	if in == "" {
		return ""
	}
	removeWS := e.t.RemoveExtraWhitespaces
	if removeWS {
		for in != "" {
			sp, n := e.normalizePrefix(in)
			if sp != " " {
				break
			}
			in = in[n:]
		}
		if in == "" {
			return ""
		}
	}
	var b strings.Builder
	b.Grow(len(in) + len(in)/2 + 3)
	if e.t.AddSpacePrefix {
		b.WriteString(spaceSymbol)
	}
	prevSpace := removeWS
	for in != "" {
		sp, n := e.normalizePrefix(in)
		if prevSpace {
			sp = strings.TrimLeft(sp, " ")
		}
		if sp != "" {
			for i := 0; i < len(sp); i++ {
				if sp[i] == ' ' {
					b.WriteString(spaceSymbol)
				} else {
					b.WriteByte(sp[i])
				}
			}
			prevSpace = sp[len(sp)-1] == ' '
		}
		in = in[n:]
		if !removeWS {
			prevSpace = false
		}
	}
	out := b.String()
	if removeWS {
		for strings.HasSuffix(out, spaceSymbol) {
			out = out[:len(out)-len(spaceSymbol)]
		}
	}
	return out
}

// normalizePrefix returns the normalized form of in's first unit and the
// number of input bytes it consumed.
func (e *Encoder) normalizePrefix(in string) (string, int) {
	if n, found := e.user.match(in); found {
		return in[:n], n
	}
	c := in[0]
	if c < utf8.RuneSelf {
		return in[:1], 1
	}
	r, n := utf8.DecodeRuneInString(in)
	if r == utf8.RuneError && n != 3 {
		// Malformed UTF-8: one byte becomes U+FFFD.
		return "\uFFFD", 1
	}
	return in[:n], n
}

// symbol is a span of the normalized text in bpe's linked list.
type symbol struct {
	start, end int32 // byte span; end == start once merged away
	prev, next int32 // -1 at either end
	freeze     bool  // user-defined symbols are never merged
}

// pair is a candidate merge of two adjacent symbols.
type pair struct {
	left, right int32
	size        int32
	score       float32
}

// before orders the agenda: higher score first, then the leftmost.
func (a pair) before(b pair) bool {
	return a.score > b.score || (a.score == b.score && a.left < b.left)
}

// bpe runs bpe_model.cc's Model::Encode over the normalized text and calls
// emit with every resulting piece's span and id. The agenda is a binary
// heap over a linked list of symbols, so a run is O(n log n).
//
// Merges only ever join adjacent symbols into vocabulary pieces, so where
// no mergeable piece contains the two characters on either side of a
// position (or one side is a frozen user-defined symbol), no merge can span
// it and the text on each side evolves independently: the global agenda's
// order restricted to one side is that side's own order. bpe therefore
// runs the algorithm segment by segment, which gives the same pieces with
// small, cache-resident heaps. (When an UNUSED piece can be formed by a
// merge, SentencePiece's resegmentation depends on the global order in
// which candidate pairs were seen, so the whole text is one segment.)
func (e *Encoder) bpe(norm string, emit func(start, end int, id int32)) {
	if norm == "" {
		return
	}
	r := bpeRun{e: e, norm: norm, emit: emit}
	prevFrozen := false
	prevStart := 0
	for off := 0; off < len(norm); {
		n, found := e.user.match(norm[off:])
		if len(r.syms) > 0 && e.segment &&
			(found || prevFrozen || !e.inner.has(norm[prevStart:off], norm[off:off+n])) {
			r.run()
		}
		i := int32(len(r.syms))
		r.syms = append(r.syms, symbol{start: int32(off), end: int32(off + n), prev: i - 1, next: i + 1, freeze: found})
		prevFrozen, prevStart = found, off
		off += n
	}
	r.run()
}

// bpeRun holds one Encode call's working storage, reused across segments.
type bpeRun struct {
	e        *Encoder
	norm     string
	emit     func(start, end int, id int32)
	syms     []symbol
	h        pairHeap
	revMerge map[string][2]string
}

// add is MaybeAddNewSymbolPair: queue the merge of symbols l and r if
// their concatenation is a mergeable piece.
func (r *bpeRun) add(l, rt int32) {
	syms := r.syms
	if l < 0 || rt < 0 || syms[l].freeze || syms[rt].freeze {
		return
	}
	start, mid, end := syms[l].start, syms[l].end, syms[rt].end
	piece := r.norm[start:end]
	id, ok := r.e.pieces[piece]
	if !ok {
		return
	}
	r.h.push(pair{left: l, right: rt, size: end - start, score: r.e.t.Scores[id]})
	if r.e.t.Types[id] == ir.TokenUnused {
		// SentencePiece never outputs an unused piece made by a merge:
		// it splits it back into the last pair recorded for its text.
		if r.revMerge == nil {
			r.revMerge = make(map[string][2]string)
		}
		r.revMerge[piece] = [2]string{r.norm[start:mid], r.norm[mid:end]}
	}
}

// run merges the symbols of one segment, emits its pieces and empties it.
func (r *bpeRun) run() {
	syms := r.syms
	if len(syms) == 0 {
		return
	}
	syms[len(syms)-1].next = -1
	r.h = r.h[:0]
	for i := int32(1); i < int32(len(syms)); i++ {
		r.add(i-1, i)
	}
	for len(r.h) > 0 {
		top := r.h.pop()
		l, rt := &syms[top.left], &syms[top.right]
		// Skip pairs a previous merge made stale.
		if l.end == l.start || rt.end == rt.start || (l.end-l.start)+(rt.end-rt.start) != top.size {
			continue
		}
		l.end = rt.end
		l.next = rt.next
		if rt.next >= 0 {
			syms[rt.next].prev = top.left
		}
		rt.end = rt.start
		r.add(l.prev, top.left)
		r.add(top.left, l.next)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		r.reseg(int(syms[i].start), int(syms[i].end))
	}
	r.syms = syms[:0]
}

// reseg is bpe_model.cc's resegment: emit a final symbol, splitting
// unused pieces back into the pairs recorded for them.
func (r *bpeRun) reseg(start, end int) {
	w := r.norm[start:end]
	id := r.e.pieceToID(w)
	if r.e.t.Types[id] == ir.TokenUnused {
		if p, ok := r.revMerge[w]; ok {
			// p[0]+p[1] == w, so the split is a position in norm.
			mid := start + len(p[0])
			r.reseg(start, mid)
			r.reseg(mid, end)
			return
		}
	}
	r.emit(start, end, id)
}

// pieceToID is ModelInterface::PieceToId: reserved pieces first, then the
// others, else <unk>.
func (e *Encoder) pieceToID(w string) int32 {
	if id, ok := e.reserved[w]; ok {
		return id
	}
	if id, ok := e.pieces[w]; ok {
		return id
	}
	return e.unk
}

// Decode returns SentencePiece's DecodeIds(ids): "▁" becomes a space,
// runs of byte pieces are reassembled into UTF-8 (each malformed byte
// becomes U+FFFD), control tokens vanish and <unk> becomes " ⁇ ". Ids
// outside the vocabulary, which SentencePiece rejects, are skipped.
func (e *Encoder) Decode(ids []int32) string {
	var (
		b         strings.Builder
		bytes     []byte
		isBosWS   = true
		bosWSSeen bool
	)
	flush := func() {
		for off := 0; off < len(bytes); {
			r, n := utf8.DecodeRune(bytes[off:])
			if r == utf8.RuneError && n != 3 {
				b.WriteString("\uFFFD")
				n = 1
			} else {
				b.Write(bytes[off : off+n])
			}
			off += n
		}
		bytes = bytes[:0]
	}
	stripBos := e.t.AddSpacePrefix || e.t.RemoveExtraWhitespaces
	for _, id := range ids {
		if id < 0 || int(id) >= len(e.t.Pieces) {
			continue
		}
		if r, ok := e.shadow[id]; ok {
			id = r
		}
		p := e.t.Pieces[id]
		switch e.t.Types[id] {
		case ir.TokenByte:
			if c, ok := pieceToByte(p); ok {
				bytes = append(bytes, c)
			}
			continue
		}
		flush()
		if bosWSSeen || b.Len() > 0 {
			isBosWS = false
		}
		bosWSSeen = false
		switch e.t.Types[id] {
		case ir.TokenControl:
		case ir.TokenUnknown:
			b.WriteString(unkSurface)
		default:
			if isBosWS && stripBos {
				var had bool
				p, had = strings.CutPrefix(p, spaceSymbol)
				// With remove_extra_whitespaces every leading space goes.
				bosWSSeen = had && !e.t.RemoveExtraWhitespaces
			}
			b.WriteString(strings.ReplaceAll(p, spaceSymbol, " "))
		}
	}
	flush()
	return b.String()
}

// pieceToByte parses a byte piece "<0xNN>" (upper-case hex, as
// SentencePiece's ByteToPiece writes it).
func pieceToByte(p string) (byte, bool) {
	if len(p) != 6 || p[:3] != "<0x" || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexUpper(p[3])
	lo, ok2 := hexUpper(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexUpper(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// pairHeap is a binary max-heap of merge candidates (by pair.before),
// written out rather than via container/heap to avoid interface boxing on
// the hot path.
type pairHeap []pair

func (h *pairHeap) push(p pair) {
	*h = append(*h, p)
	s := *h
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !s[i].before(s[parent]) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *pairHeap) pop() pair {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(s) {
			break
		}
		best := l
		if r := l + 1; r < len(s) && s[r].before(s[l]) {
			best = r
		}
		if !s[best].before(s[i]) {
			break
		}
		s[i], s[best] = s[best], s[i]
		i = best
	}
	*h = s
	return top
}

// prefixMatcher finds the longest user-defined symbol at the start of a
// string, like SentencePiece's PrefixMatcher (a Darts trie). It is a byte
// trie whose edges live in one map keyed by node<<8 | byte.
type prefixMatcher struct {
	first    [256]bool // some symbol starts with this byte
	edges    map[uint64]int32
	terminal []bool // per node: a symbol ends here
}

func newPrefixMatcher(symbols []string) prefixMatcher {
	m := prefixMatcher{terminal: []bool{false}}
	if len(symbols) == 0 {
		return m
	}
	m.edges = make(map[uint64]int32)
	for _, s := range symbols {
		// Darts keys are C strings: a symbol ends at its first NUL.
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		if s == "" {
			continue
		}
		m.first[s[0]] = true
		node := int32(0)
		for i := 0; i < len(s); i++ {
			k := uint64(node)<<8 | uint64(s[i])
			next, ok := m.edges[k]
			if !ok {
				next = int32(len(m.terminal))
				m.terminal = append(m.terminal, false)
				m.edges[k] = next
			}
			node = next
		}
		m.terminal[node] = true
	}
	return m
}

// match returns the length of the longest symbol prefixing s and true, or
// the length of s's first character (by its lead byte, as SentencePiece's
// OneCharLen) and false.
func (m *prefixMatcher) match(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	if m.first[s[0]] {
		best := 0
		node := int32(0)
		for i := 0; i < len(s); i++ {
			next, ok := m.edges[uint64(node)<<8|uint64(s[i])]
			if !ok {
				break
			}
			node = next
			if m.terminal[node] {
				best = i + 1
			}
		}
		if best > 0 {
			return best, true
		}
	}
	n := oneCharLen(s[0])
	if n > len(s) {
		n = len(s)
	}
	return n, false
}

// oneCharLen is SentencePiece's OneCharLen: the UTF-8 length its lead byte
// claims (1 for continuation bytes, 4 for 0xF0-0xFF).
func oneCharLen(c byte) int {
	switch c >> 4 {
	case 0xC, 0xD:
		return 2
	case 0xE:
		return 3
	case 0xF:
		return 4
	}
	return 1
}

// initSegments builds the set of character pairs that occur inside
// mergeable pieces and decides whether bpe may segment at all.
func (e *Encoder) initSegments() {
	count := 0
	for p := range e.pieces {
		count += len(p)
	}
	e.inner = newPairSet(count)
	e.segment = true
	for p, id := range e.pieces {
		// Units as bpe splits text: one character each (OneCharLen).
		prev := -1
		for off := 0; off < len(p); {
			n := min(oneCharLen(p[off]), len(p)-off)
			if prev >= 0 {
				e.inner.add(p[prev:off], p[off:off+n])
			}
			prev = off
			off += n
		}
		if e.t.Types[id] == ir.TokenUnused && e.segment && e.mergeable(p) {
			e.segment = false
		}
	}
}

// mergeable reports whether some merge of two symbols could form p: some
// split of p into characters has both halves single characters or
// mergeable pieces (a superset of what a merge can really produce).
func (e *Encoder) mergeable(p string) bool {
	for k := min(oneCharLen(p[0]), len(p)); k < len(p); k += min(oneCharLen(p[k]), len(p)-k) {
		l, r := p[:k], p[k:]
		_, lok := e.pieces[l]
		_, rok := e.pieces[r]
		lok = lok || len(l) == min(oneCharLen(l[0]), len(l))
		rok = rok || len(r) == min(oneCharLen(r[0]), len(r))
		if lok && rok {
			return true
		}
	}
	return false
}

// pairSet is a one-hash Bloom filter of character pairs: has may report a
// pair that was never added (bpe then just does not cut there) but never
// misses one that was.
type pairSet struct {
	bits []uint64
	mask uint64
}

func newPairSet(n int) pairSet {
	size := uint64(1) << 12
	for size < uint64(n)*16 {
		size <<= 1
	}
	return pairSet{bits: make([]uint64, size/64), mask: size - 1}
}

func pairHash(a, b string) uint64 {
	// FNV-1a over both characters with a separator.
	h := uint64(14695981039346656037)
	for i := 0; i < len(a); i++ {
		h = (h ^ uint64(a[i])) * 1099511628211
	}
	h = (h ^ 0xFF) * 1099511628211
	for i := 0; i < len(b); i++ {
		h = (h ^ uint64(b[i])) * 1099511628211
	}
	return h ^ h>>29
}

func (s *pairSet) add(a, b string) {
	h := pairHash(a, b) & s.mask
	s.bits[h>>6] |= 1 << (h & 63)
}

func (s *pairSet) has(a, b string) bool {
	h := pairHash(a, b) & s.mask
	return s.bits[h>>6]&(1<<(h&63)) != 0
}

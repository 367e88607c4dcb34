package tokenizer

import (
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gemmaconv/gemmaconv/ir"
)

// Committed copies of ../shared/fixtures (see goldens/tokenizer/README.md).
const (
	goldenModel = "../goldens/tokenizer/tokenizer.model"
	goldenCases = "../goldens/tokenizer/tokenization.json"
)

var (
	goldenOnce sync.Once
	goldenEnc  *Encoder
	goldenErr  error
)

func loadGolden(t testing.TB) *Encoder {
	t.Helper()
	goldenOnce.Do(func() {
		tok, err := LoadSentencePiece(goldenModel)
		if err != nil {
			goldenErr = err
			return
		}
		goldenEnc, goldenErr = New(tok)
	})
	if goldenErr != nil {
		t.Fatal(goldenErr)
	}
	return goldenEnc
}

func TestParseGolden(t *testing.T) {
	tok := loadGolden(t).Tokenizer()
	if tok.Model != "llama" || len(tok.Pieces) != 4096 {
		t.Fatalf("model %q with %d pieces, want llama with 4096", tok.Model, len(tok.Pieces))
	}
	if len(tok.Scores) != 4096 || len(tok.Types) != 4096 {
		t.Fatalf("%d scores, %d types", len(tok.Scores), len(tok.Types))
	}
	want := struct{ PAD, EOS, BOS, UNK, EOT int32 }{0, 1, 2, 3, 7}
	got := struct{ PAD, EOS, BOS, UNK, EOT int32 }{tok.PAD, tok.EOS, tok.BOS, tok.UNK, tok.EOT}
	if got != want {
		t.Errorf("special ids %+v, want %+v", got, want)
	}
	if !tok.AddBOS || tok.AddEOS || tok.AddSpacePrefix || !tok.ByteFallback || !tok.SplitDigits ||
		tok.RemoveExtraWhitespaces || tok.Normalizer != "identity" {
		t.Errorf("flags: AddBOS %v AddEOS %v AddSpacePrefix %v ByteFallback %v SplitDigits %v RemoveExtraWhitespaces %v Normalizer %q",
			tok.AddBOS, tok.AddEOS, tok.AddSpacePrefix, tok.ByteFallback, tok.SplitDigits, tok.RemoveExtraWhitespaces, tok.Normalizer)
	}
	for id, w := range map[int32]struct {
		piece string
		typ   ir.TokenType
	}{
		0: {"<pad>", ir.TokenControl}, 3: {"<unk>", ir.TokenUnknown}, 4: {"<mask>", ir.TokenUserDefined},
		6: {"<start_of_turn>", ir.TokenUserDefined}, 8: {"<0x00>", ir.TokenByte}, 263: {"<0xFF>", ir.TokenByte},
		264: {"▁t", ir.TokenNormal},
	} {
		if tok.Pieces[id] != w.piece || tok.Types[id] != w.typ {
			t.Errorf("piece %d = %q type %d, want %q type %d", id, tok.Pieces[id], tok.Types[id], w.piece, w.typ)
		}
	}
	if tok.Scores[265] != -1 {
		t.Errorf("score of piece 265 = %v, want -1", tok.Scores[265])
	}
}

type goldenCase struct {
	Text    string   `json:"text"`
	IDs     []int32  `json:"ids"`
	Pieces  []string `json:"pieces"`
	Decoded string   `json:"decoded"`
}

func loadCases(t testing.TB) []goldenCase {
	t.Helper()
	data, err := os.ReadFile(goldenCases)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Cases
}

// TestGoldenCases checks every SentencePiece 0.1.97 output in
// tokenization.json: ids, pieces and decoded text.
func TestGoldenCases(t *testing.T) {
	e := loadGolden(t)
	cases := loadCases(t)
	if len(cases) != 165 {
		t.Errorf("%d cases, want 165", len(cases))
	}
	pass := 0
	for i, c := range cases {
		ok := true
		ids := e.Encode(c.Text)
		if !slices.Equal(ids, c.IDs) {
			t.Errorf("case %d %q: ids\n got %v\nwant %v", i, c.Text, ids, c.IDs)
			ok = false
		}
		pieces := make([]string, len(ids))
		for j, id := range ids {
			pieces[j] = e.Piece(id)
		}
		if !slices.Equal(pieces, c.Pieces) {
			t.Errorf("case %d %q: pieces\n got %q\nwant %q", i, c.Text, pieces, c.Pieces)
			ok = false
		}
		if sp := e.EncodePieces(c.Text); !slices.Equal(sp, c.Pieces) {
			t.Errorf("case %d %q: EncodePieces\n got %q\nwant %q", i, c.Text, sp, c.Pieces)
			ok = false
		}
		if d := e.Decode(c.IDs); d != c.Decoded {
			t.Errorf("case %d: Decode = %q, want %q", i, d, c.Decoded)
			ok = false
		}
		if ok {
			pass++
		}
	}
	t.Logf("%d/%d golden cases pass", pass, len(cases))
}

// TestSpecialTokens checks that user-defined symbols are matched whole and
// control tokens are not matched from text.
func TestSpecialTokens(t *testing.T) {
	e := loadGolden(t)
	ids := e.Encode("<start_of_turn><mask><eos><bos>")
	if len(ids) < 3 || ids[0] != 6 || ids[1] != 4 {
		t.Fatalf("ids %v: want <start_of_turn>=6 <mask>=4 first", ids)
	}
	for _, id := range ids[2:] {
		if e.Tokenizer().Types[id] == ir.TokenControl {
			t.Errorf("control token %d produced from text: %v", id, ids)
		}
	}
	if d := e.Decode(ids); d != "<start_of_turn><mask><eos><bos>" {
		t.Errorf("round trip %q", d)
	}
	// Control tokens decode to nothing, <unk> to " ⁇ ".
	if d := e.Decode([]int32{2, 6, 0, 1, 3}); d != "<start_of_turn> \u2047 " {
		t.Errorf("Decode(controls) = %q", d)
	}
	// Digits are split: the vocabulary has no multi-digit pieces.
	for _, id := range e.Encode("2024") {
		if p := e.Piece(id); utf8.RuneCountInString(p) != 1 {
			t.Errorf("digit piece %q", p)
		}
	}
	// Out-of-range ids are skipped.
	if d := e.Decode([]int32{-1, 99999, 268}); d != " the" {
		t.Errorf("Decode(bad ids) = %q", d)
	}
	if e.Piece(-1) != "" || e.Piece(4096) != "" {
		t.Error("Piece out of range not empty")
	}
}

// TestDecodeBytes checks byte-piece reassembly and U+FFFD for malformed
// sequences, as SentencePiece's ProcessBytePieces.
func TestDecodeBytes(t *testing.T) {
	e := loadGolden(t)
	b := func(c byte) int32 { return 8 + int32(c) }
	for _, c := range []struct {
		ids  []int32
		want string
	}{
		{[]int32{b(0xE4), b(0xB8), b(0xAD)}, "中"},
		{[]int32{b(0xE4), b(0xB8)}, "\uFFFD\uFFFD"},
		{[]int32{b(0xE4), 268, b(0xAD)}, "\uFFFD the\uFFFD"},
		{[]int32{b(0xEF), b(0xBF), b(0xBD)}, "\uFFFD"},
		{[]int32{b(0xFF), b('a')}, "\uFFFDa"},
		{[]int32{b(0xED), b(0xA0), b(0x80)}, "\uFFFD\uFFFD\uFFFD"}, // surrogate
	} {
		if got := e.Decode(c.ids); got != c.want {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.want)
		}
	}
	// Malformed input UTF-8 normalizes to U+FFFD, one per bad byte.
	ids := e.Encode("a\xffb\xe4\xb8")
	if got := e.Decode(ids); got != "a\uFFFDb\uFFFD\uFFFD" {
		t.Errorf("malformed input decodes to %q", got)
	}
}

// TestNormalizerOptions exercises add_dummy_prefix and
// remove_extra_whitespaces, which Gemma leaves off, against SentencePiece's
// Normalizer::Normalize and Decode behaviour.
func TestNormalizerOptions(t *testing.T) {
	base := loadGolden(t).Tokenizer()
	tok := *base
	tok.AddSpacePrefix = true
	tok.RemoveExtraWhitespaces = true
	e, err := New(&tok)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"":                  "",
		"   ":               "",
		"  hello   world  ": "▁hello▁world",
		"a":                 "▁a",
		" <mask>  x":        "▁<mask>▁x",
		"tab\there":         "▁tab\there",
		"x\xff":             "▁x\uFFFD",
		"trailing ":         "▁trailing",
		"<mask> <mask>":     "▁<mask>▁<mask>",
		// A literal U+2581 is indistinguishable from an escaped space:
		// remove_extra_whitespaces trims it at the end too.
		"\u2581 already \u2581": "▁\u2581▁already",
	} {
		if got := e.normalize(in); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
	// Decoding strips the dummy prefix of the first piece only.
	ids := e.Encode("hello world")
	if e.Piece(ids[0])[:3] != spaceSymbol {
		t.Fatalf("first piece %q has no dummy prefix", e.Piece(ids[0]))
	}
	if got := e.Decode(ids); got != "hello world" {
		t.Errorf("Decode = %q", got)
	}
	if got := e.Decode(append([]int32{2}, ids...)); got != "hello world" {
		t.Errorf("Decode after <bos> = %q", got)
	}

	tok.RemoveExtraWhitespaces = false
	e, err = New(&tok)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.normalize("  a  "); got != "▁▁▁a▁▁" {
		t.Errorf("dummy prefix only: %q", got)
	}
	if got := e.Decode(e.Encode("  a  ")); got != "  a  " {
		t.Errorf("dummy prefix only round trip: %q", got)
	}
}

// TestUnknownWithoutByteFallback: consecutive unknown characters become
// one <unk>, as SentencePiece merges them.
func TestUnknownWithoutByteFallback(t *testing.T) {
	base := loadGolden(t).Tokenizer()
	tok := *base
	tok.ByteFallback = false
	tok.Types = slices.Clone(base.Types)
	for i, ty := range tok.Types {
		if ty == ir.TokenByte {
			tok.Types[i] = ir.TokenUnused
		}
	}
	e, err := New(&tok)
	if err != nil {
		t.Fatal(err)
	}
	ids := e.Encode("a中文b字")
	if want := []int32{e.pieces["a"], 3, e.pieces["b"], 3}; !slices.Equal(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	if p := e.EncodePieces("a中文b"); !slices.Equal(p, []string{"a", "中文", "b"}) {
		t.Errorf("pieces %q", p)
	}
	if d := e.Decode(ids); d != "a \u2047 b \u2047 " {
		t.Errorf("decode %q", d)
	}
}

// TestUnusedResegmented: a merge into an UNUSED piece is split back into
// the pieces that formed it (bpe_model.cc's resegment).
func TestUnusedResegmented(t *testing.T) {
	base := loadGolden(t).Tokenizer()
	e0 := loadGolden(t)
	the := e0.Encode(" the")
	if len(the) != 1 || e0.Piece(the[0]) != "▁the" {
		t.Fatalf("\" the\" = %v", the)
	}
	tok := *base
	tok.Types = slices.Clone(base.Types)
	tok.Types[the[0]] = ir.TokenUnused
	e, err := New(&tok)
	if err != nil {
		t.Fatal(err)
	}
	got := e.EncodePieces(" the")
	if len(got) < 2 || strings.Join(got, "") != "▁the" {
		t.Errorf("unused ▁the encodes as %q", got)
	}
	for _, p := range got {
		if p == "▁the" {
			t.Errorf("unused piece produced: %q", got)
		}
	}
}

func TestNewRejects(t *testing.T) {
	base := loadGolden(t).Tokenizer()
	mod := func(f func(t *ir.Tokenizer)) *ir.Tokenizer {
		c := *base
		c.Pieces = slices.Clone(base.Pieces)
		c.Types = slices.Clone(base.Types)
		c.Scores = slices.Clone(base.Scores)
		f(&c)
		return &c
	}
	for name, tok := range map[string]*ir.Tokenizer{
		"nil":       nil,
		"unigram":   mod(func(t *ir.Tokenizer) { t.Model = ModelUnigram }),
		"gpt2":      mod(func(t *ir.Tokenizer) { t.Model = "gpt2" }),
		"nfkc":      mod(func(t *ir.Tokenizer) { t.Normalizer = "nmt_nfkc" }),
		"lengths":   mod(func(t *ir.Tokenizer) { t.Scores = t.Scores[:10] }),
		"duplicate": mod(func(t *ir.Tokenizer) { t.Pieces[300] = t.Pieces[301] }),
		"empty":     mod(func(t *ir.Tokenizer) { t.Pieces[300] = "" }),
		"no unk":    mod(func(t *ir.Tokenizer) { t.Types[3] = ir.TokenControl }),
		"two unk":   mod(func(t *ir.Tokenizer) { t.Types[2] = ir.TokenUnknown }),
		"bad type":  mod(func(t *ir.Tokenizer) { t.Types[300] = 9 }),
		"no bytefb": mod(func(t *ir.Tokenizer) { t.ByteFallback = false }),
		"bad byte":  mod(func(t *ir.Tokenizer) { t.Pieces[8] = "<0xzz>" }),
		"lost byte": mod(func(t *ir.Tokenizer) { t.Types[8] = ir.TokenNormal }),
		"lowercase": mod(func(t *ir.Tokenizer) { t.Pieces[8+0xAB] = "<0xab>" }),
	} {
		if _, err := New(tok); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(mod(func(t *ir.Tokenizer) { t.Normalizer = "" })); err != nil {
		t.Errorf("empty normalizer name: %v", err)
	}
}

// TestRoundTrip: with the identity normalizer, Decode(Encode(s)) == s for
// any valid UTF-8 string without U+2581, which SentencePiece decodes as a
// space like the spaces it escapes.
func TestRoundTrip(t *testing.T) {
	e := loadGolden(t)
	rng := rand.New(rand.NewSource(1))
	alphabet := []rune("aeiou tnsrhldcmTHE  \t\n0123456789.,'\"-<>[]@_éüß中文🙂\u00a0\u200b\uFFFD")
	specials := []string{"<mask>", "[@BOS@]", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<0x41>", "<unk>", "<pad>"}
	for i := 0; i < 2000; i++ {
		var b strings.Builder
		n := rng.Intn(60)
		for j := 0; j < n; j++ {
			switch k := rng.Intn(20); {
			case k == 0:
				b.WriteString(specials[rng.Intn(len(specials))])
			case k < 4:
				// Any code point, surrogates excluded by WriteRune.
				if r := rune(rng.Intn(0x110000)); r != 0x2581 {
					b.WriteRune(r)
				}
			default:
				b.WriteRune(alphabet[rng.Intn(len(alphabet))])
			}
		}
		s := strings.ToValidUTF8(b.String(), "\uFFFD")
		ids := e.Encode(s)
		if got := e.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
		for _, id := range ids {
			if e.Tokenizer().Types[id] == ir.TokenControl || e.Tokenizer().Types[id] == ir.TokenUnknown {
				t.Fatalf("%q produced id %d (%q)", s, id, e.Piece(id))
			}
		}
	}
}

// TestLongInputLinear guards against quadratic merging: a long run of one
// character is the worst case for a naive BPE. It runs both the segmented
// path and one agenda over the whole text.
func TestLongInputLinear(t *testing.T) {
	e := loadGolden(t)
	global := *e
	global.segment = false
	s := strings.Repeat("a", 200000) + strings.Repeat(" the", 50000)
	for _, enc := range []*Encoder{e, &global} {
		if enc.Decode(enc.Encode(s)) != s {
			t.Fatal("round trip failed")
		}
	}
}

func TestParseErrors(t *testing.T) {
	data, err := os.ReadFile(goldenModel)
	if err != nil {
		t.Fatal(err)
	}
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	piece := func(p string, extra ...byte) []byte {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, p)
		m = append(m, extra...)
		out := tag(1, protowire.BytesType)
		return protowire.AppendBytes(out, m)
	}
	trainer := func(fields ...byte) []byte {
		return protowire.AppendBytes(tag(2, protowire.BytesType), fields)
	}
	varintField := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(num, protowire.VarintType), v)
	}
	minimal := slices.Concat(piece("<unk>"), piece("a"), piece("b"), trainer(varintField(3, 2)...))
	if tok, err := ParseSentencePiece(minimal); err != nil {
		t.Fatalf("minimal model: %v", err)
	} else if tok.UNK != 0 || tok.BOS != 1 || tok.EOS != 2 || tok.PAD != -1 || !tok.AddSpacePrefix || !tok.RemoveExtraWhitespaces {
		t.Errorf("defaults: %+v", tok)
	}
	neg := slices.Concat(piece("<unk>"), trainer(slices.Concat(varintField(3, 2), varintField(41, uint64(1<<64-1)), varintField(42, uint64(1<<64-1)))...))
	if tok, err := ParseSentencePiece(neg); err != nil || tok.BOS != -1 || tok.EOS != -1 {
		t.Errorf("negative ids: %v %+v", err, tok)
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"empty":          {nil, "no pieces"},
		"truncated":      {data[:len(data)/2], "byte "},
		"varint":         {[]byte{0x0a, 0xff, 0xff}, "byte 1"},
		"length":         {[]byte{0x0a, 0x10, 0x0a}, "byte 1"},
		"wire type":      {slices.Concat(tag(1, protowire.VarintType), []byte{1}), "wire type"},
		"score type":     {piece("a", 0x10, 1), "SentencePiece.score"},
		"bad enum":       {slices.Concat(piece("<unk>", 0x18, 9), trainer()), "unknown type"},
		"empty piece":    {slices.Concat(piece(""), trainer()), "empty"},
		"no trainer":     {piece("a"), "trainer_spec"},
		"word model":     {slices.Concat(piece("a"), trainer(varintField(3, 3)...)), "not supported"},
		"bad model":      {slices.Concat(piece("a"), trainer(varintField(3, 7)...)), "unknown model type"},
		"id range":       {slices.Concat(piece("a"), trainer(varintField(41, 5)...)), "bos_id"},
		"field zero":     {[]byte{0x00, 0x00}, "byte 0"},
		"group":          {[]byte{0x0b}, "byte 1"},
		"ws suffix":      {slices.Concat(piece("a"), trainer(varintField(24, 1)...)), "treat_whitespace_as_suffix"},
		"trainer nested": {slices.Concat(piece("a"), tag(2, protowire.BytesType), []byte{3, 0x18, 0x80, 0x80}), "byte "},
	} {
		_, err := ParseSentencePiece(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want it to mention %q", name, err, c.want)
		}
	}
	if _, err := LoadSentencePiece(filepath.Join(t.TempDir(), "missing.model")); err == nil {
		t.Error("missing file loaded")
	}
	bad := filepath.Join(t.TempDir(), "bad.model")
	if err := os.WriteFile(bad, []byte{0x0a, 0x10}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSentencePiece(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("error does not name the file: %v", err)
	}
}

// TestUnigramParses: UNIGRAM models load (for conversion) but the encoder
// refuses them.
func TestUnigramParses(t *testing.T) {
	var m []byte
	for _, p := range []string{"<unk>", "<s>", "</s>"} {
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendBytes(m, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), p))
	}
	m = protowire.AppendTag(m, 2, protowire.BytesType)
	m = protowire.AppendBytes(m, protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1))
	tok, err := ParseSentencePiece(m)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Model != ModelUnigram {
		t.Errorf("model %q", tok.Model)
	}
	if _, err := New(tok); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("New(unigram) = %v", err)
	}
}

// FuzzParseSentencePiece feeds mutated models (seeded with the real one
// and truncations of it) to the parser, and accepted ones to the encoder.
// Seeds are 63 KB, so run it with a short -fuzzminimizetime (e.g. 1s) or
// the fuzzer spends minutes minimizing each new input.
func FuzzParseSentencePiece(f *testing.F) {
	data, err := os.ReadFile(goldenModel)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	for _, n := range []int{0, 1, 2, 3, 7, 100, 1000, len(data) / 2, len(data) - 1} {
		f.Add(data[:n])
	}
	f.Add(data[len(data)-200:])
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := ParseSentencePiece(b)
		if err != nil {
			return
		}
		if len(tok.Pieces) != len(tok.Scores) || len(tok.Pieces) != len(tok.Types) {
			t.Fatal("ragged vocabulary")
		}
		// An accepted model must be safe to build and use.
		if e, err := New(tok); err == nil {
			e.Decode(e.Encode("Hello, <mask> wörld 12 中"))
		}
	})
}

// FuzzEncode checks that any string encodes, that valid UTF-8 round-trips
// (U+2581 decoding as a space) and that Decode always yields valid UTF-8.
func FuzzEncode(f *testing.F) {
	e := loadGolden(f)
	for _, c := range loadCases(f) {
		f.Add(c.Text)
	}
	f.Add("a\xffb\xe4\xb8")
	f.Fuzz(func(t *testing.T, s string) {
		ids := e.Encode(s)
		got := e.Decode(ids)
		want := strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), spaceSymbol, " ")
		if utf8.ValidString(s) && got != want {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("Decode produced invalid UTF-8 %q", got)
		}
		if p := e.EncodePieces(s); len(p) != len(ids) {
			t.Fatalf("%d pieces, %d ids", len(p), len(ids))
		}
	})
}

func BenchmarkEncodeBrown(b *testing.B) {
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		b.Skip("GEMMACONV_FIXTURES not set: the benchmark encodes text/brown-test.txt from the shared fixtures")
	}
	text, err := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
	if err != nil {
		b.Fatal(err)
	}
	e := loadGolden(b)
	s := string(text)
	b.SetBytes(int64(len(s)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Encode(s)
	}
}

// BenchmarkEncodeBrownLines encodes the corpus one line at a time, as a
// caller tokenizing prompts would.
func BenchmarkEncodeBrownLines(b *testing.B) {
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		b.Skip("GEMMACONV_FIXTURES not set: the benchmark encodes text/brown-test.txt from the shared fixtures")
	}
	text, err := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
	if err != nil {
		b.Fatal(err)
	}
	e := loadGolden(b)
	lines := strings.SplitAfter(string(text), "\n")
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range lines {
			e.Encode(l)
		}
	}
}

func BenchmarkDecodeBrown(b *testing.B) {
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		b.Skip("GEMMACONV_FIXTURES not set: the benchmark decodes text/brown-test.txt from the shared fixtures")
	}
	text, err := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
	if err != nil {
		b.Fatal(err)
	}
	e := loadGolden(b)
	ids := e.Encode(string(text))
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Decode(ids)
	}
}

// TestModelGoldenPrompts checks the prompt token ids (BOS + SentencePiece
// ids) recorded with the tiny models' gemma_pytorch goldens.
func TestModelGoldenPrompts(t *testing.T) {
	dir := os.Getenv("GEMMACONV_FIXTURES")
	if dir == "" {
		t.Skip("GEMMACONV_FIXTURES not set: the model goldens' prompt ids live in the shared fixtures")
	}
	e := loadGolden(t)
	for _, m := range []string{"gemma1-tiny", "gemma2-tiny", "gemma3-tiny"} {
		data, err := os.ReadFile(filepath.Join(dir, m, "goldens", "goldens.json"))
		if err != nil {
			t.Fatal(err)
		}
		var g struct {
			Prompts []struct {
				Text     string  `json:"text"`
				TokenIDs []int32 `json:"token_ids"`
			} `json:"prompts"`
		}
		if err := json.Unmarshal(data, &g); err != nil {
			t.Fatal(err)
		}
		for _, p := range g.Prompts {
			got := append([]int32{e.Tokenizer().BOS}, e.Encode(p.Text)...)
			if !slices.Equal(got, p.TokenIDs) {
				t.Errorf("%s %q: ids\n got %v\nwant %v", m, p.Text, got, p.TokenIDs)
			}
		}
	}
}

// TestSegmentedMatchesGlobal: running BPE per independent segment gives
// exactly what one global agenda over the whole text gives.
func TestSegmentedMatchesGlobal(t *testing.T) {
	e := loadGolden(t)
	if !e.segment {
		t.Fatal("golden vocabulary should allow segmenting")
	}
	global := *e
	global.segment = false
	texts := []string{strings.Repeat("a", 5000), "<mask>aa<start_of_turn>  the  12 3"}
	for _, c := range loadCases(t) {
		texts = append(texts, c.Text)
	}
	if dir := os.Getenv("GEMMACONV_FIXTURES"); dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, "text", "brown-test.txt"))
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(b))
	}
	rng := rand.New(rand.NewSource(2))
	alphabet := []rune("abcdeilnorst THE\n-'.,0123456789éü中")
	for i := 0; i < 300; i++ {
		r := make([]rune, rng.Intn(200))
		for j := range r {
			r[j] = alphabet[rng.Intn(len(alphabet))]
		}
		texts = append(texts, string(r))
	}
	for _, s := range texts {
		if a, b := e.Encode(s), global.Encode(s); !slices.Equal(a, b) {
			t.Fatalf("%.80q: segmented %v, global %v", s, a, b)
		}
	}
	// A reachable UNUSED piece turns segmenting off.
	tok := *e.Tokenizer()
	tok.Types = slices.Clone(tok.Types)
	tok.Types[268] = ir.TokenUnused // ▁the
	u, err := New(&tok)
	if err != nil {
		t.Fatal(err)
	}
	if u.segment {
		t.Error("segmenting with a mergeable unused piece")
	}
}

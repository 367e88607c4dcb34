package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gemmaconv/gemmaconv/formats/gguf"
	"github.com/gemmaconv/gemmaconv/ir"
	"github.com/gemmaconv/gemmaconv/quantize"
)

// Metadata keys. llama-quantize writes the quantize.imatrix.* keys (see
// tools/quantize/quantize.cpp); the gemmaconv.* keys are ours and named so
// that they collide with nothing llama.cpp reads (docs/quantize.md).
const (
	keyImatrixFile      = "quantize.imatrix.file"
	keyImatrixDataset   = "quantize.imatrix.dataset"
	keyImatrixEntries   = "quantize.imatrix.entries_count"
	keyImatrixChunks    = "quantize.imatrix.chunks_count"
	keyVersion          = "gemmaconv.version"
	keyQuantizePreset   = "gemmaconv.quantize.preset"
	keyQuantizeOptions  = "gemmaconv.quantize.options"
	keySourceFormat     = "gemmaconv.source.format"
	keySourceFiles      = "gemmaconv.source.files"
	keySourceSHA256     = "gemmaconv.source.sha256"
	keyImatrixSHA256    = "gemmaconv.imatrix.sha256"
	llamaKVOverrideSize = 127 // llama-quantize copies strings into char[128]
)

// presetNames are the presets quantize accepts, as llama-quantize names
// them, with its aliases.
var presetNames = []string{"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
	"Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE", "F16", "BF16", "F32"}

var presetAliases = map[string]string{"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "MXFP4": "MXFP4_MOE"}

// parsePreset maps a preset name (case-insensitive, llama-quantize's
// aliases accepted) to its file type.
func parsePreset(name string) (quantize.FileType, error) {
	up := strings.ToUpper(name)
	if a, ok := presetAliases[up]; ok {
		up = a
	}
	for _, p := range presetNames {
		if p == up {
			if p == "MXFP4_MOE" {
				return quantize.FileMXFP4, nil
			}
			return quantize.ParseFileType(p)
		}
	}
	return 0, fmt.Errorf("--type %q is not a preset gemmaconv knows; want one of %s", name, strings.Join(presetNames, ", "))
}

type quantizeFlags struct {
	src             sourceFlags
	out             string
	bits            int
	typ             string
	imatrix         string
	pure            bool
	tensorTypes     []string
	outputType      string
	embdType        string
	leaveOutput     bool
	threads         int
	dryRun          bool
	allowRequantize bool
	report          string
	noSourceHash    bool
}

func newQuantizeCmd(g *globalFlags) *cobra.Command {
	f := &quantizeFlags{}
	cmd := &cobra.Command{
		Use:   "quantize SRC -o OUT.gguf",
		Short: "Quantize a checkpoint to GGUF with llama-quantize's presets",
		Long: `Quantize a checkpoint (any format gemmaconv reads) to a GGUF file whose
tensors are exactly what llama.cpp's convert_hf_to_gguf.py followed by
llama-quantize produce: the same type for every tensor and the same bytes.

--bits 4 is Q4_K_M and --bits 8 is Q8_0; --type picks any preset
(` + strings.Join(presetNames, ", ") + `).
Without --bits or --type the preset is Q4_K_M.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQuantize(cmd, g, f, args[0])
		},
	}
	f.src.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "output", "o", "", "output GGUF path")
	fl.IntVar(&f.bits, "bits", 4, "4 (Q4_K_M) or 8 (Q8_0); --type overrides it")
	fl.StringVar(&f.typ, "type", "", "preset: Q4_K_M, Q8_0, Q5_K_M, IQ4_XS, ... (see above)")
	fl.StringVar(&f.imatrix, "imatrix", "", "importance matrix from llama-imatrix or gemmaconv imatrix (GGUF or legacy .dat)")
	fl.BoolVar(&f.pure, "pure", false, "give every quantizable tensor the preset's base type (no k-quant mixture)")
	fl.StringArrayVar(&f.tensorTypes, "tensor-type", nil, "REGEX=TYPE: tensors whose name matches get TYPE (first match wins; repeatable)")
	fl.StringVar(&f.outputType, "output-tensor-type", "", "type of output.weight (and of token_embd.weight when tied)")
	fl.StringVar(&f.embdType, "token-embedding-type", "", "type of token_embd.weight")
	fl.BoolVar(&f.leaveOutput, "leave-output-tensor", false, "do not quantize output.weight")
	fl.IntVar(&f.threads, "threads", 0, "worker threads (0: all cores); the output does not depend on it")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print each tensor's type and the output size; write nothing")
	fl.BoolVar(&f.allowRequantize, "allow-requantize", false, "allow converting tensors that are already quantized (loses quality)")
	fl.StringVar(&f.report, "report", "", "write a JSON table of every tensor's type, size and RMSE against the source")
	fl.BoolVar(&f.noSourceHash, "no-source-hash", false, "do not record the source files' sha256 (saves one read of the source)")
	return cmd
}

// quantizeSetup is everything decided before any tensor is read.
type quantizeSetup struct {
	ft    quantize.FileType
	opts  quantize.PlanOptions
	extra []string // gemmaconv.quantize.options
}

// setup validates the flags; every error is a usage error.
func (f *quantizeFlags) setup(cmd *cobra.Command) (*quantizeSetup, error) {
	s := &quantizeSetup{}
	if f.threads < 0 {
		return nil, fmt.Errorf("--threads %d: want 0 (all cores) or a positive count", f.threads)
	}
	// --bits is checked even when --type (which wins) is given, so a
	// mistaken --bits 3 is never silently ignored.
	switch f.bits {
	case 4:
		s.ft = quantize.FileQ4_K_M
	case 8:
		s.ft = quantize.FileQ8_0
	default:
		return nil, fmt.Errorf("--bits %d: want 4 (Q4_K_M) or 8 (Q8_0); for other sizes give a preset with --type (Q3_K_M, Q5_K_M, Q6_K, ...)", f.bits)
	}
	if f.typ != "" {
		ft, err := parsePreset(f.typ)
		if err != nil {
			return nil, err
		}
		s.ft = ft
	}
	if f.out == "" && !f.dryRun {
		return nil, errors.New("quantize: -o OUT.gguf is required (or --dry-run)")
	}
	s.opts = quantize.PlanOptions{FileType: s.ft, Pure: f.pure, Imatrix: f.imatrix != "", LeaveOutput: f.leaveOutput, AllowRequantize: f.allowRequantize}
	for _, tt := range f.tensorTypes {
		o, err := quantize.ParseTensorTypeOverride(tt)
		if err != nil {
			return nil, fmt.Errorf("--tensor-type: %w", err)
		}
		s.opts.Overrides = append(s.opts.Overrides, o)
		s.extra = append(s.extra, "tensor-type="+tt)
	}
	for _, x := range []struct {
		flag, val string
		dst       **ir.DType
	}{{"--output-tensor-type", f.outputType, &s.opts.OutputType}, {"--token-embedding-type", f.embdType, &s.opts.TokenEmbeddingType}} {
		if x.val == "" {
			continue
		}
		t, err := ir.ParseDType(x.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", x.flag, err)
		}
		*x.dst = &t
		s.extra = append(s.extra, strings.TrimPrefix(x.flag, "--")+"="+t.String())
	}
	if f.pure {
		s.extra = append(s.extra, "pure")
	}
	if f.leaveOutput {
		s.extra = append(s.extra, "leave-output-tensor")
	}
	if f.allowRequantize {
		s.extra = append(s.extra, "allow-requantize")
	}
	return s, nil
}

func runQuantize(cmd *cobra.Command, g *globalFlags, f *quantizeFlags, srcPath string) error {
	s, err := f.setup(cmd)
	if err != nil {
		return &exitError{2, err}
	}
	if f.out != "" && !f.dryRun {
		if a, err1 := os.Stat(srcPath); err1 == nil {
			if b, err2 := os.Stat(f.out); err2 == nil && os.SameFile(a, b) {
				return &exitError{2, fmt.Errorf("quantize: input and output are the same file: %s", f.out)}
			}
		}
	}
	m, err := f.src.open(srcPath)
	if err != nil {
		return err
	}
	defer m.Close()
	gm, err := ir.WithNormOffset(m, 0)
	if err != nil {
		return err
	}

	var im *gguf.Imatrix
	if f.imatrix != "" {
		if im, err = gguf.ReadImatrix(f.imatrix); err != nil {
			return &exitError{2, err}
		}
	}
	plans, err := quantize.PlanTensors(gm, s.opts)
	if err != nil {
		if errors.Is(err, quantize.ErrRequantize) {
			return &exitError{2, err}
		}
		return err
	}
	stderr := cmd.ErrOrStderr()
	if f.dryRun {
		printPlan(cmd.OutOrStdout(), plans, s.ft)
		return nil
	}

	types := make(map[string]ir.DType, len(plans))
	for _, p := range plans {
		types[p.Name] = p.To
	}
	var weights map[string][]float32
	if im != nil {
		var missing []string
		weights, missing, err = imatrixFor(im, gm, plans)
		if err != nil {
			return &exitError{2, fmt.Errorf("%s: %w", f.imatrix, err)}
		}
		if len(missing) > 0 && !g.quiet {
			fmt.Fprintf(stderr, "imatrix has no weights for %d quantized tensor(s), quantized unweighted: %s\n", len(missing), strings.Join(missing, ", "))
		}
	}
	cm, err := quantize.Convert(gm, types, quantize.ConvertOptions{Threads: f.threads, Imatrix: weights})
	if err != nil {
		return err
	}
	quantize.LlamaOrder(cm.Tensors)
	if err := stampMetadata(cm, m, f, s, im); err != nil {
		return err
	}
	progress, finish := newProgress(g, "quantize")
	err = gguf.Write(f.out, cm, gguf.WriteOptions{Progress: progress})
	finish()
	if err != nil {
		return err
	}
	if !g.quiet {
		var newBytes, elems int64
		fallbacks := 0
		for _, p := range plans {
			newBytes += p.Bytes()
			elems += numElements(p.Shape)
			if p.Fallback {
				fallbacks++
			}
		}
		fmt.Fprintf(stderr, "wrote %s (%s, %d tensors, %.2f MiB, %.2f bits per weight)\n", f.out, s.ft, len(plans), float64(newBytes)/(1<<20), float64(newBytes)*8/float64(max(elems, 1)))
		if fallbacks > 0 {
			fmt.Fprintf(stderr, "%d tensor(s) needed a fallback type: their rows are not a multiple of the preset's block size\n", fallbacks)
		}
	}
	if f.report != "" {
		if err := writeReport(f.report, f.out, srcPath, s, gm, plans, f.threads); err != nil {
			return err
		}
	}
	return nil
}

// imatrixFor picks the importance weights of the tensors being converted,
// as llama-quantize does: a tensor without an entry is quantized
// unweighted; an entry of the wrong length is an error, except for
// token_embd (whose entry llama.cpp ignores); non-finite weights anywhere
// are an error.
func imatrixFor(im *gguf.Imatrix, m *ir.Model, plans []quantize.TensorPlan) (map[string][]float32, []string, error) {
	all := im.Weights()
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range all[n] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, nil, fmt.Errorf("imatrix contains non-finite value %v (entry %s)", v, n)
			}
		}
	}
	out := map[string][]float32{}
	var missing []string
	for _, p := range plans {
		if p.To == p.From || !p.Quantizable {
			continue
		}
		w, ok := all[p.Name]
		if !ok {
			missing = append(missing, p.Name)
			continue
		}
		cols := p.Shape[len(p.Shape)-1]
		if int64(len(w)) != cols {
			if p.Name == "token_embd.weight" || p.Name == "per_layer_token_embd.weight" {
				continue
			}
			return nil, nil, fmt.Errorf("imatrix size %d is different from tensor size %d for %s", len(w), cols, p.Name)
		}
		out[p.Name] = w
	}
	return out, missing, nil
}

// stampMetadata sets the keys llama-quantize sets, then gemmaconv's own.
// A source GGUF's own gemmaconv.* stamps describe an earlier step and are
// dropped; its other keys (quantize.imatrix.* included) are kept, as
// llama-quantize keeps every key of its input.
func stampMetadata(cm, src *ir.Model, f *quantizeFlags, s *quantizeSetup, im *gguf.Imatrix) error {
	kept := cm.Extra[:0:0]
	for _, kv := range cm.Extra {
		if !strings.HasPrefix(kv.Key, "gemmaconv.") {
			kept = append(kept, kv)
		}
	}
	cm.Extra = kept
	cm.SetExtra("general.file_type", uint32(s.ft))
	if im != nil {
		cm.SetExtra(keyImatrixFile, truncate(f.imatrix, llamaKVOverrideSize))
		if len(im.Datasets) > 0 {
			cm.SetExtra(keyImatrixDataset, truncate(im.Datasets[0], llamaKVOverrideSize))
		}
		cm.SetExtra(keyImatrixEntries, uint32(len(im.Entries)))
		if im.ChunkCount > 0 {
			cm.SetExtra(keyImatrixChunks, im.ChunkCount)
		}
	}
	cm.SetExtra(keyVersion, version)
	cm.SetExtra(keyQuantizePreset, s.ft.String())
	if len(s.extra) > 0 {
		cm.SetExtra(keyQuantizeOptions, append([]string(nil), s.extra...))
	}
	if src.Provenance.Format != "" {
		cm.SetExtra(keySourceFormat, src.Provenance.Format)
	}
	files := sourceFiles(src)
	if len(files) > 0 {
		rel := make([]string, len(files))
		for i, p := range files {
			rel[i] = relName(src.Provenance.Path, p)
		}
		cm.SetExtra(keySourceFiles, rel)
		if !f.noSourceHash {
			sums, err := hashFiles(files, f.threads)
			if err != nil {
				return err
			}
			cm.SetExtra(keySourceSHA256, sums)
		}
	}
	if im != nil {
		sums, err := hashFiles([]string{f.imatrix}, 1)
		if err != nil {
			return err
		}
		cm.SetExtra(keyImatrixSHA256, sums[0])
	}
	return nil
}

// sourceFiles lists the files the reader opened, each once, in order.
func sourceFiles(m *ir.Model) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range m.Provenance.Files {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// relName names a source file relative to the path the user gave (its
// directory, for a file), with forward slashes, so the stamp does not
// depend on where the checkpoint lives.
func relName(root, p string) string {
	base := root
	if st, err := os.Stat(root); err == nil && !st.IsDir() {
		base = filepath.Dir(root)
	}
	if r, err := filepath.Rel(base, p); err == nil && !strings.HasPrefix(r, "..") {
		return filepath.ToSlash(r)
	}
	return filepath.Base(p)
}

// hashFiles returns each file's sha256 in hex, hashing up to threads files
// at once.
func hashFiles(paths []string, threads int) ([]string, error) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	sums := make([]string, len(paths))
	errs := make([]error, len(paths))
	sem := make(chan struct{}, threads)
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fh, err := os.Open(p)
			if err != nil {
				errs[i] = err
				return
			}
			defer fh.Close()
			h := sha256.New()
			if _, err := io.CopyBuffer(h, fh, make([]byte, 1<<20)); err != nil {
				errs[i] = fmt.Errorf("hashing %s: %w", p, err)
				return
			}
			sums[i] = hex.EncodeToString(h.Sum(nil))
		}()
	}
	wg.Wait()
	return sums, errors.Join(errs...)
}

func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// printPlan prints the --dry-run table and totals, as llama-quantize
// --dry-run reports sizes.
func printPlan(w io.Writer, plans []quantize.TensorPlan, ft quantize.FileType) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSHAPE\tFROM\tTO\tMIB\tNOTE")
	var orig, neu, elems int64
	fallbacks := 0
	for _, p := range plans {
		dims := make([]string, len(p.Shape))
		for i, d := range p.Shape {
			dims[i] = fmt.Sprint(d)
		}
		elems += numElements(p.Shape)
		orig += p.SourceBytes()
		neu += p.Bytes()
		var note []string
		if p.Override {
			note = append(note, "--tensor-type")
		}
		if p.Fallback {
			fallbacks++
			note = append(note, fmt.Sprintf("fallback from %s: %d columns", p.Wanted, p.Shape[len(p.Shape)-1]))
		}
		fmt.Fprintf(tw, "%s\t[%s]\t%s\t%s\t%.3f\t%s\n", p.Name, strings.Join(dims, " "), p.From, p.To, float64(p.Bytes())/(1<<20), strings.Join(note, "; "))
	}
	tw.Flush()
	bpw := func(b int64) float64 { return float64(b) * 8 / float64(max(elems, 1)) }
	fmt.Fprintf(w, "\npreset %s: %d tensors\nsource size = %.2f MiB (%.2f BPW)\nquant size  = %.2f MiB (%.2f BPW)\n",
		ft, len(plans), float64(orig)/(1<<20), bpw(orig), float64(neu)/(1<<20), bpw(neu))
	if fallbacks > 0 {
		fmt.Fprintf(w, "%d tensor(s) required fallback quantization\n", fallbacks)
	}
}

// reportTensor is one row of --report.
type reportTensor struct {
	Name       string  `json:"name"`
	Type       string  `json:"type"`
	SourceType string  `json:"source_type"`
	Shape      []int64 `json:"shape"`
	Bytes      int64   `json:"bytes"`
	// RMSE is the root mean square difference between the dequantized
	// tensor read back from the output file and the source tensor (norms
	// as GGUF stores them, 1+w); MaxAbsError the largest difference;
	// SourceRMS the source's own root mean square, for scale.
	RMSE        float64 `json:"rmse"`
	MaxAbsError float64 `json:"max_abs_error"`
	SourceRMS   float64 `json:"source_rms"`
	Fallback    bool    `json:"fallback,omitempty"`
	Override    bool    `json:"override,omitempty"`
}

type report struct {
	Source        string         `json:"source"`
	Output        string         `json:"output"`
	Preset        string         `json:"preset"`
	Options       []string       `json:"options,omitempty"`
	Tensors       []reportTensor `json:"tensors"`
	Bytes         int64          `json:"bytes"`
	SourceBytes   int64          `json:"source_bytes"`
	Parameters    int64          `json:"parameters"`
	BitsPerWeight float64        `json:"bits_per_weight"`
	RMSE          float64        `json:"rmse"`
}

// writeReport reads the written file back tensor by tensor, a few MB of
// rows at a time, and compares each with its source.
func writeReport(path, out, srcPath string, s *quantizeSetup, src *ir.Model, plans []quantize.TensorPlan, threads int) error {
	f, err := gguf.Open(out)
	if err != nil {
		return err
	}
	defer f.Close()
	byName := map[string]quantize.TensorPlan{}
	for _, p := range plans {
		byName[p.Name] = p
	}
	rows := make([]reportTensor, len(f.Tensors))
	sq := make([]float64, len(f.Tensors)) // sum of squared errors per tensor
	errs := make([]error, len(f.Tensors))
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < threads; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ti := f.Tensors[i]
				st := src.Tensor(ti.Name)
				if st == nil {
					errs[i] = fmt.Errorf("report: %s: tensor %s has no source tensor", out, ti.Name)
					continue
				}
				got := &ir.Tensor{Name: ti.Name, DType: ti.Type, Shape: ti.Shape(), Source: f.Window(ti)}
				r := reportTensor{Name: ti.Name, Type: ti.Type.String(), SourceType: st.DType.String(), Shape: ti.Shape(), Bytes: ti.Size,
					Fallback: byName[ti.Name].Fallback, Override: byName[ti.Name].Override}
				sum, srcSq, maxAbs, err := compareTensor(got, st)
				got.Release()
				if err != nil {
					errs[i] = err
					continue
				}
				n := float64(max(ti.NumElements(), 1))
				r.RMSE, r.SourceRMS, r.MaxAbsError = math.Sqrt(sum/n), math.Sqrt(srcSq/n), maxAbs
				rows[i], sq[i] = r, sum
			}
		}()
	}
	for i := range f.Tensors {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rep := report{Source: srcPath, Output: out, Preset: s.ft.String(), Options: s.extra, Tensors: rows}
	var total float64
	for i, r := range rows {
		rep.Bytes += r.Bytes
		rep.SourceBytes += byName[r.Name].SourceBytes()
		rep.Parameters += f.Tensors[i].NumElements()
		total += sq[i]
	}
	rep.BitsPerWeight = float64(rep.Bytes) * 8 / float64(max(rep.Parameters, 1))
	rep.RMSE = math.Sqrt(total / float64(max(rep.Parameters, 1)))
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// compareTensor decodes a and b (same shape) in row chunks and returns the
// sum of squared differences, b's sum of squares and the largest absolute
// difference.
func compareTensor(a, b *ir.Tensor) (sum, bSq, maxAbs float64, err error) {
	rows, cols := a.Rows(), a.Cols()
	if b.Rows() != rows || b.Cols() != cols {
		return 0, 0, 0, fmt.Errorf("report: tensor %s: shape %v, source %v", a.Name, a.Shape, b.Shape)
	}
	per := max(int64(1), (4<<20)/(4*cols))
	va := make([]float32, min(per, rows)*cols)
	vb := make([]float32, len(va))
	ra := make([]byte, min(per, rows)*a.RowBytes())
	rb := make([]byte, min(per, rows)*b.RowBytes())
	for r := int64(0); r < rows; r += per {
		n := min(per, rows-r)
		if err := a.ReadRows(r, n, ra[:n*a.RowBytes()]); err != nil {
			return 0, 0, 0, err
		}
		if err := b.ReadRows(r, n, rb[:n*b.RowBytes()]); err != nil {
			return 0, 0, 0, err
		}
		if err := quantize.DecodeRows(a.DType, ra[:n*a.RowBytes()], va[:n*cols]); err != nil {
			return 0, 0, 0, fmt.Errorf("report: tensor %s: %w", a.Name, err)
		}
		if err := quantize.DecodeRows(b.DType, rb[:n*b.RowBytes()], vb[:n*cols]); err != nil {
			return 0, 0, 0, fmt.Errorf("report: source tensor %s: %w", b.Name, err)
		}
		for i := int64(0); i < n*cols; i++ {
			d := float64(va[i]) - float64(vb[i])
			sum += d * d
			bSq += float64(vb[i]) * float64(vb[i])
			maxAbs = max(maxAbs, math.Abs(d))
		}
	}
	return sum, bSq, maxAbs, nil
}

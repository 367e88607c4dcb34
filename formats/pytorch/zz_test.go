package pytorch
import ("testing"; "os"; "fmt")
var zzN int
func FuzzZZ1(f *testing.F) {
	for _, s := range pickleSeeds(f) { f.Add(s) }
	os.MkdirAll("/tmp/zztrace", 0o755)
	f.Fuzz(func(t *testing.T, b []byte) {
		zzN++
		os.WriteFile(fmt.Sprintf("/tmp/zztrace/%d-%06d", os.Getpid(), zzN), b, 0o644)
		UnpickleBytes(b, UnpickleOptions{Limits: fuzzLimits})
		os.Remove(fmt.Sprintf("/tmp/zztrace/%d-%06d", os.Getpid(), zzN))
	})
}

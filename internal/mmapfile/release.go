package mmapfile

import "os"

// The format readers map a whole file from offset 0, so an index into the
// mapping is a file offset and page boundaries in the file are page
// boundaries in memory. The helpers below take such a mapping and a byte
// range of it (a tensor, or part of one) and drop the pages involved.

// ReleaseCovering drops every page of data that holds any byte of
// [off, off+n), rounding the range outward to page boundaries (clipped to
// the mapping). Bytes next to the range that share its first or last page
// are dropped too; for a read-only file mapping they are simply read again
// if touched. data must be a mapping made by Map; an empty or out-of-range
// request does nothing.
func ReleaseCovering(data []byte, off, n int64) {
	if start, end := coveringPages(off, n, int64(os.Getpagesize()), int64(len(data))); end > start {
		DontNeed(data[start:end])
	}
}

// ReleaseWithin drops only the pages of data lying wholly inside
// [off, off+n), rounding the range inward, so pages shared with bytes
// outside it stay resident. data must be a mapping made by Map; an empty
// or out-of-range request does nothing.
func ReleaseWithin(data []byte, off, n int64) {
	if start, end := withinPages(off, n, int64(os.Getpagesize()), int64(len(data))); end > start {
		DontNeed(data[start:end])
	}
}

// coveringPages is [off, off+n) rounded outward to multiples of ps and
// clipped to [0, limit); end <= start means nothing to drop.
func coveringPages(off, n, ps, limit int64) (start, end int64) {
	if off < 0 || n <= 0 || off >= limit {
		return 0, 0
	}
	n = min(n, limit-off)
	start = off / ps * ps
	end = min((off+n+ps-1)/ps*ps, limit)
	return start, end
}

// withinPages is [off, off+n) rounded inward to multiples of ps and
// clipped to [0, limit); end <= start means nothing to drop.
func withinPages(off, n, ps, limit int64) (start, end int64) {
	if off < 0 || n <= 0 || off >= limit {
		return 0, 0
	}
	n = min(n, limit-off)
	start = (off + ps - 1) / ps * ps
	end = (off + n) / ps * ps
	return start, end
}

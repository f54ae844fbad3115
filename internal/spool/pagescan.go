package spool

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"os"
	"slices"
)

// Layout of bbolt's file format, from go.etcd.io/bbolt v1.5.0
// internal/common. A page starts with a 16-byte header: id u64, flags
// u16, count u16, overflow u32. A leaf page then has 16-byte elements:
// flags, pos, ksize, vsize, all u32, with pos relative to the element.
// A meta page contains magic, version, page size, flags, root bucket,
// freelist page id, high water mark, txid and an FNV-64a checksum. bbolt
// writes these in the machine's byte order.
// NOTE: the scan assumes little-endian, which covers amd64, arm and arm64.
const (
	pageHeaderSize   = 16
	leafElementSize  = 16
	leafPageFlag     = 0x02
	metaPageFlag     = 0x04
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	bboltMagic       = 0xED0CDAED
	// inlineBucketHeader is the root page id and sequence before an
	// inline bucket's page.
	inlineBucketHeader = 16
	// maxScanOverflow bounds a leaf page's claimed overflow, so a damaged
	// header cannot make the scan read gigabytes for one page.
	maxScanOverflow = 1 << 16
)

var le = binary.LittleEndian

// valueLocation is the file offset and length of a stored message.
type valueLocation struct {
	seq    uint64
	offset int64
	size   int
}

type locations map[uint64]valueLocation

func (l locations) sorted() []valueLocation {
	out := slices.Collect(maps.Values(l))
	slices.SortFunc(out, func(a, b valueLocation) int { return cmpU64(a.seq, b.seq) })
	return out
}

// scanPages finds every leaf element that has an 8-byte key and a value
// that decodes as a stored message, skipping pages on the freelist when
// the meta pages name a readable one. Memory grows with the number of
// messages found, which suits an offline tool.
func scanPages(f *os.File, size int64) (locations, int, error) {
	pageSize := readPageSize(f)
	free := readFreelist(f, pageSize)
	found := locations{}
	skipped := 0

	header := make([]byte, pageHeaderSize)
	for id := int64(2); (id+1)*pageSize <= size; id++ {
		off := id * pageSize
		if _, err := f.ReadAt(header, off); err != nil {
			break
		}
		if le.Uint16(header[8:]) != leafPageFlag || free[uint64(id)] {
			continue
		}
		overflow := int64(le.Uint32(header[12:]))
		span := min((1+min(overflow, maxScanOverflow))*pageSize, size-off)
		page := make([]byte, span)
		if _, err := f.ReadAt(page, off); err != nil && err != io.EOF {
			continue
		}
		skipped += scanLeaf(page, off, found)
	}
	return found, skipped, nil
}

// scanLeaf records the messages in one leaf page (or an inline bucket's
// page) that starts at file offset base.
func scanLeaf(page []byte, base int64, found locations) (skipped int) {
	if len(page) < pageHeaderSize {
		return 0
	}
	count := int(le.Uint16(page[10:]))
	for i := range count {
		at := pageHeaderSize + i*leafElementSize
		if at+leafElementSize > len(page) {
			break
		}
		flags := le.Uint32(page[at:])
		pos := int(le.Uint32(page[at+4:]))
		ksize := int(le.Uint32(page[at+8:]))
		vsize := int(le.Uint32(page[at+12:]))
		kstart := at + pos
		vstart := kstart + ksize
		if pos <= 0 || ksize < 0 || vsize < 0 || vstart+vsize > len(page) || vstart < 0 {
			continue
		}
		value := page[vstart : vstart+vsize]
		if flags&bucketLeafFlag != 0 {
			if len(value) >= inlineBucketHeader+pageHeaderSize && le.Uint64(value) == 0 {
				inner := value[inlineBucketHeader:]
				if le.Uint16(inner[8:]) == leafPageFlag {
					skipped += scanLeaf(inner, base+int64(vstart+inlineBucketHeader), found)
				}
			}
			continue
		}
		if ksize != 8 || len(value) < recordHeaderSize+4 || value[0] != recordVersion {
			continue
		}
		if _, err := checkRecord(value); err != nil {
			skipped++
			continue
		}
		seq := keySeq(page[kstart:vstart])
		found[seq] = valueLocation{seq: seq, offset: base + int64(vstart), size: vsize}
	}
	return skipped
}

// readPageSize returns the page size from the first meta page that has
// bbolt's magic number, or the OS page size.
func readPageSize(f *os.File) int64 {
	for _, m := range readMetas(f) {
		return int64(m.pageSize)
	}
	return int64(os.Getpagesize())
}

type metaPage struct {
	pageSize uint32
	freelist uint64
	// highWater is the number of pages in use: every page id is below it.
	highWater uint64
	txid      uint64
}

// readMetas returns the meta pages whose magic number and FNV-64a
// checksum are valid, newest first.
func readMetas(f *os.File) []metaPage {
	var metas []metaPage
	for _, off := range []int64{0, int64(os.Getpagesize()), 4096, 16384, 65536} {
		b := make([]byte, 80)
		if _, err := f.ReadAt(b, off); err != nil {
			continue
		}
		if le.Uint16(b[8:]) != metaPageFlag || le.Uint32(b[16:]) != bboltMagic {
			continue
		}
		ps := le.Uint32(b[24:])
		if ps < 512 || ps > 1<<20 || (off != 0 && int64(ps) != off) {
			continue
		}
		sum := fnv.New64a()
		sum.Write(b[16:72])
		if sum.Sum64() != le.Uint64(b[72:]) {
			continue
		}
		metas = append(metas, metaPage{
			pageSize: ps, freelist: le.Uint64(b[48:]), highWater: le.Uint64(b[56:]), txid: le.Uint64(b[64:]),
		})
	}
	slices.SortFunc(metas, func(a, b metaPage) int { return cmpU64(b.txid, a.txid) })
	return metas
}

// readFreelist returns the free page ids named by the newest meta page,
// so stale copies of deleted messages on free pages are not salvaged.
// TODO: pages freed by the last transaction but still pending are not in
// the stored freelist, so a few deleted messages may come back.
func readFreelist(f *os.File, pageSize int64) map[uint64]bool {
	free := map[uint64]bool{}
	metas := readMetas(f)
	if len(metas) == 0 {
		return free
	}
	header := make([]byte, pageHeaderSize+8)
	off := int64(metas[0].freelist) * pageSize
	if _, err := f.ReadAt(header, off); err != nil || le.Uint16(header[8:]) != freelistPageFlag {
		return free
	}
	count, start := int64(le.Uint16(header[10:])), int64(pageHeaderSize)
	if count == 0xFFFF {
		count, start = int64(le.Uint64(header[pageHeaderSize:])), pageHeaderSize+8
	}
	if count <= 0 || count > fileSize(f.Name())/pageSize {
		return free
	}
	ids := make([]byte, count*8)
	if _, err := f.ReadAt(ids, off+start); err != nil {
		return free
	}
	for i := range count {
		free[le.Uint64(ids[i*8:])] = true
	}
	return free
}

// checkBeforeOpen returns an error for two kinds of damage that bbolt's
// Open does not report as errors. A file shorter than the pages that its
// newest meta page marks as in use: reading a mapped page past the end of
// the file raises SIGBUS, which crashes a goroutine that has not set
// debug.SetPanicOnFault. And a stored list of free pages without a valid
// header, on which Open panics with the file locked and open.
func checkBeforeOpen(path string) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	size := fileSize(path)
	if size == 0 {
		return nil
	}
	metas := readMetas(f)
	if len(metas) == 0 {
		return fmt.Errorf("%w: %s has no valid bbolt meta page", ErrCorrupt, path)
	}
	m := metas[0]
	if need := int64(m.highWater) * int64(m.pageSize); need > size {
		return fmt.Errorf("%w: %s is %d bytes but its pages in use need %d bytes: the file was truncated", ErrCorrupt, path, size, need)
	}
	if err := checkFreelistHeader(f, m); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return nil
}

// checkFreelistHeader checks the header of the list of free pages that m
// names, if m names one: its page id, its type, and that its entries fit
// in its pages and its pages below the high water mark.
func checkFreelistHeader(f *os.File, m metaPage) error {
	if m.freelist == noFreelist {
		return nil
	}
	if m.freelist < 2 || m.freelist >= m.highWater {
		return fmt.Errorf("list of free pages at page %d, outside the %d pages in use", m.freelist, m.highWater)
	}
	header := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(header, int64(m.freelist)*int64(m.pageSize)); err != nil {
		return fmt.Errorf("read the list of free pages: %w", err)
	}
	id, flags, overflow := le.Uint64(header), le.Uint16(header[8:]), uint64(le.Uint32(header[12:]))
	if id != m.freelist || flags != freelistPageFlag {
		return fmt.Errorf("page %d should hold the list of free pages but has id %d and type %#x", m.freelist, id, flags)
	}
	count, start := uint64(le.Uint16(header[10:])), uint64(pageHeaderSize)
	if count == 0xFFFF {
		count, start = le.Uint64(header[pageHeaderSize:]), pageHeaderSize+8
	}
	span := overflow + 1
	if m.freelist+span > m.highWater || count > (span*uint64(m.pageSize)-start)/8 {
		return fmt.Errorf("list of free pages at page %d claims %d entries in %d pages, more than fit below page %d", m.freelist, count, span, m.highWater)
	}
	return nil
}

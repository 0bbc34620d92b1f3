package statebackup

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Finding the CIDs an export repeats, in memory that does not grow with the pinset.
//
// Exports are not sorted by CID (the samples of raft peers and every REST API stream of a raft peer come in no
// order), so a repeat need not be next to its first occurrence and comparing neighbours is not enough. Instead:
//
//   - while an export is small (up to exactLimit CIDs) the CIDs are kept exactly, keyed by 16 bytes of their
//     SHA-256: a small state pays a few MiB at most and never needs a second look;
//   - past that, the CIDs move into a Bloom filter of fixed size (16 MiB, 6 hashes) and the map is dropped. A CID the
//     filter says it may have seen is a suspect: either a repeat or a false positive. Only suspects are kept, by
//     their text, and a second read of the export counts how often each really occurs, which makes the final answer
//     exact: a false positive costs a second read, never a wrong count or a dropped pin.
//
// How many suspects a clean export yields is the filter's false-positive rate: about 7e-9 per CID at 1,000,000
// pins (none expected), 0.002 at 10,000,000 (some 20,000 suspects, about 2 MiB), and it climbs quickly past that
// (4% at 20,000,000): memory is flat up to some ten million pins and grows with the suspects beyond. A tampered
// export that repeats many CIDs makes every repeat a suspect; it fails verification anyway.
const (
	defaultExactLimit = 1 << 16
	defaultFilterBits = 1 << 27 // 16 MiB
	filterHashes      = 6
)

// dedupeSize sets where the exact set gives way to the filter and the filter's size in bits (a power of two);
// tests shrink both to force suspects.
type dedupeSize struct {
	exactLimit int
	filterBits uint64
}

var defaultDedupe = dedupeSize{exactLimit: defaultExactLimit, filterBits: defaultFilterBits}

// cidDedupe tells, for each CID added, whether it is certainly new, certainly a repeat, or a suspect.
type cidDedupe struct {
	size     dedupeSize
	exact    map[[16]byte]struct{} // nil once the filter took over
	filter   []uint64
	suspects map[string]struct{}
}

// seen is what cidDedupe.add says of a CID.
type seen int

const (
	seenNew     seen = iota // first time, certainly
	seenRepeat              // seen before, certainly
	seenSuspect             // maybe seen before: a second read decides
)

func newCIDDedupe(size dedupeSize) *cidDedupe {
	return &cidDedupe{size: size, exact: map[[16]byte]struct{}{}, suspects: map[string]struct{}{}}
}

func cidKey(cid string) [16]byte {
	sum := sha256.Sum256([]byte(cid))
	var k [16]byte
	copy(k[:], sum[:16])
	return k
}

func (d *cidDedupe) add(cid string) seen {
	k := cidKey(cid)
	if d.exact != nil {
		if _, ok := d.exact[k]; ok {
			return seenRepeat
		}
		d.exact[k] = struct{}{}
		if len(d.exact) > d.size.exactLimit {
			d.toFilter()
		}
		return seenNew
	}
	if d.filterAdd(k) {
		return seenNew
	}
	d.suspects[cid] = struct{}{}
	return seenSuspect
}

// toFilter moves the exact set into the filter and drops it.
func (d *cidDedupe) toFilter() {
	d.filter = make([]uint64, d.size.filterBits/64)
	for k := range d.exact {
		d.filterAdd(k)
	}
	d.exact = nil
}

// filterAdd sets k's bits and reports whether any was unset (k is certainly new). The two halves of the key give
// the bit positions by double hashing.
func (d *cidDedupe) filterAdd(k [16]byte) bool {
	h1, h2 := binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])|1
	mask, fresh := d.size.filterBits-1, false
	for i := range uint64(filterHashes) {
		bit := (h1 + i*h2) & mask
		w, b := bit/64, uint64(1)<<(bit%64)
		if d.filter[w]&b == 0 {
			d.filter[w] |= b
			fresh = true
		}
	}
	return fresh
}

// occurrences re-reads an export and counts how often each suspect occurs in it.
func (d *cidDedupe) occurrences(r io.Reader) (map[string]int, error) {
	counts := make(map[string]int, len(d.suspects))
	err := forEachPin(r, func(cid string, _ []byte) error {
		if _, ok := d.suspects[cid]; ok {
			counts[cid]++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("re-reading the export to check %d possibly repeated pins: %w", len(d.suspects), err)
	}
	return counts, nil
}

// repeats is how many objects of an export re-read from r repeat an earlier CID (0 without suspects).
func (d *cidDedupe) repeats(open func() (io.ReadCloser, error)) (int, error) {
	if len(d.suspects) == 0 {
		return 0, nil
	}
	r, err := open()
	if err != nil {
		return 0, fmt.Errorf("re-reading the export: %w", err)
	}
	defer r.Close()
	counts, err := d.occurrences(r)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range counts {
		n += max(c-1, 0)
	}
	return n, nil
}

// countPinsOnce counts the distinct pins of an export: open gives it, and gives it again when a second read must
// settle suspects.
func countPinsOnce(size dedupeSize, open func() (io.ReadCloser, error)) (int, error) {
	r, err := open()
	if err != nil {
		return 0, err
	}
	d := newCIDDedupe(size)
	total, repeats, err := countFirstRead(r, d)
	r.Close()
	if err != nil {
		return 0, err
	}
	more, err := d.repeats(open)
	if err != nil {
		return 0, err
	}
	return total - repeats - more, nil
}

// countFirstRead reads an export once, telling every CID to d: the number of objects and the certain repeats.
func countFirstRead(r io.Reader, d *cidDedupe) (total, repeats int, err error) {
	pr, err := newPinReader(r)
	if err != nil {
		return 0, 0, err
	}
	for {
		raw, err := pr.next()
		if errors.Is(err, io.EOF) {
			return total, repeats, nil
		}
		if err != nil {
			return 0, 0, err
		}
		cid, err := cidOf(raw)
		if err != nil {
			return 0, 0, fmt.Errorf("pin %d: %w", pr.n, err)
		}
		total++
		if d.add(cid) == seenRepeat {
			repeats++
		}
	}
}

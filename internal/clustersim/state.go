package clustersim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"sync"
)

// backend makes the pinset durable. Contract: Append returns only once the
// entries (and membership, when not nil) survive a crash; Close is called at
// a clean shutdown only, after the last Append.
type backend interface {
	Append(entries []Entry, m *Membership) error
	Close() error
}

// loadedState is what a backend found on disk.
type loadedState struct {
	Epoch      string
	Entries    []Entry
	Membership *Membership
}

// pinState is a peer's replicated pinset in memory, mirrored to a backend.
// Every change goes through apply, which keeps clock, seq and disk in step.
type pinState struct {
	mu         sync.Mutex
	entries    map[string]Entry
	membership Membership
	clock      uint64
	seq        uint64
	// bySeq[i] is the CID stored with seq i+1, so pulls of recent changes
	// cost what changed, not the whole pinset.
	bySeq []string
	// epoch names this process's numbering of seq: the numbers are given
	// afresh at every load, so a cursor into another process's numbering
	// means nothing here and gets the whole state (or the digest's answer).
	epoch string
	// digest sums up the entries (the winning one per CID) so that a peer
	// holding the same can be told so without being sent them: see pull.
	digest stateDigest
	store  backend
}

// stateDigest is an order-free summary of a set of entries: their count
// and the xor and the sum of a 64-bit hash of each. A change is named by
// its CID, clock and origin (an origin's clock never repeats), plus the
// removal mark. Kept up to date entry by entry, it costs nothing to read.
type stateDigest struct {
	n        int
	xor, sum uint64
}

func entryHash(e Entry) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(e.CID))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(strconv.AppendUint(nil, e.Clock, 10))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(e.Origin))
	if e.Deleted {
		_, _ = h.Write([]byte{1})
	}
	return h.Sum64()
}

func (d *stateDigest) add(e Entry) {
	h := entryHash(e)
	d.n++
	d.xor ^= h
	d.sum += h
}

func (d *stateDigest) remove(e Entry) {
	h := entryHash(e)
	d.n--
	d.xor ^= h
	d.sum -= h
}

func (d stateDigest) String() string {
	return strconv.Itoa(d.n) + "." + strconv.FormatUint(d.xor, 36) + "." + strconv.FormatUint(d.sum, 36)
}

func newEpoch() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newPinState(ls loadedState, store backend) *pinState {
	// Not ls.Epoch: the seqs below are not those of the last process.
	s := &pinState{entries: make(map[string]Entry, len(ls.Entries)), epoch: newEpoch(), store: store}
	for _, e := range reduce(ls.Entries) {
		s.clock = max(s.clock, e.Clock)
		s.entries[e.CID] = e
		s.digest.add(e)
	}
	for _, e := range sortedValues(s.entries) {
		s.seq++
		e.Seq = s.seq
		s.entries[e.CID] = e
		s.bySeq = append(s.bySeq, e.CID)
	}
	if ls.Membership != nil {
		s.membership = ls.Membership.clone()
		s.clock = max(s.clock, s.membership.Clock)
	}
	return s
}

// stampLocal applies a change made on this peer: it gets the next clock.
func (s *pinState) stampLocal(e Entry, origin string) (Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	e.Clock, e.Origin = s.clock, origin
	if err := s.applyLocked([]Entry{e}, nil); err != nil {
		return Entry{}, err
	}
	return s.entries[e.CID], nil
}

// merge applies entries and membership from another peer; it returns how
// many entries changed this peer's state.
func (s *pinState) merge(in []Entry, m *Membership) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var changed []Entry
	for _, e := range in {
		if old, ok := s.entries[e.CID]; ok && !e.newer(old) {
			continue
		}
		changed = append(changed, e)
	}
	var newM *Membership
	if m != nil && m.Peers != nil && (m.newer(s.membership) || len(s.membership.Peers) == 0) {
		c := m.clone()
		newM = &c
	}
	if len(changed) == 0 && newM == nil {
		return 0, false, nil
	}
	return len(changed), newM != nil, s.applyLocked(changed, newM)
}

func (s *pinState) applyLocked(in []Entry, m *Membership) error {
	for i := range in {
		s.seq++
		in[i].Seq = s.seq
		s.clock = max(s.clock, in[i].Clock)
	}
	if m != nil {
		s.clock = max(s.clock, m.Clock)
	}
	if err := s.store.Append(in, m); err != nil {
		return fmt.Errorf("persisting %d pinset changes: %w", len(in), err)
	}
	for _, e := range in {
		if old, ok := s.entries[e.CID]; ok {
			s.digest.remove(old)
		}
		s.digest.add(e)
		s.entries[e.CID] = e
		s.bySeq = append(s.bySeq, e.CID)
	}
	if m != nil {
		s.membership = m.clone()
	}
	return nil
}

// setMembership records a membership decided on this peer.
func (s *pinState) setMembership(peers map[string]string, origin string) (Membership, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	m := Membership{Peers: peers, Clock: s.clock, Origin: origin}
	if err := s.applyLocked(nil, &m); err != nil {
		return Membership{}, err
	}
	return m.clone(), nil
}

// initMembership records the peerset formed at first start. It carries
// clock 0 so that peers forming the same cluster do not churn over whose
// copy wins; any later change supersedes it.
func (s *pinState) initMembership(peers map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(nil, &Membership{Peers: peers})
}

func (s *pinState) getMembership() Membership {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.membership.clone()
}

// digestString is the digest of the entries held now, as pull takes it.
func (s *pinState) digestString() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.digest.String()
}

// pull answers another peer's sync: the entries stored after seq in this
// process's numbering (epoch), oldest first, at most limit. A cursor of
// another epoch starts over from the first entry, unless the asking peer's
// digest says it holds the same entries as this one: then nothing is sent
// and its cursor moves to the latest change. That is what a restarted crdt
// peer costs: it compares heads and fetches nothing it has, where pulling
// the whole pinset from each of 49 peers was a fifth of 50 restarting
// simulated peers' CPU (issue #9).
func (s *pinState) pull(epoch string, seq uint64, digest string, limit int) (string, []Entry, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch {
		seq = 0
	}
	if seq == 0 && digest != "" && digest == s.digest.String() {
		return s.epoch, nil, uint64(len(s.bySeq)), false
	}
	return s.sinceLocked(seq, limit)
}

// sinceLocked lists entries stored after seq, oldest first, at most limit.
// Called with s.mu held.
func (s *pinState) sinceLocked(seq uint64, limit int) (epoch string, out []Entry, last uint64, more bool) {
	for i := seq; i < uint64(len(s.bySeq)); i++ {
		e := s.entries[s.bySeq[i]]
		if e.Seq != i+1 {
			continue // superseded by a later change
		}
		if len(out) == limit {
			more = true
			break
		}
		out = append(out, e)
	}
	last = seq
	if len(out) > 0 {
		last = out[len(out)-1].Seq
	}
	return s.epoch, out, last, more
}

// live lists the pins (not removed), sorted by CID.
func (s *pinState) live() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return liveOf(s.entries)
}

func (s *pinState) get(c string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[c]
	return e, ok && !e.Deleted
}

func liveOf(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		if !e.Deleted {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CID < out[j].CID })
	return out
}

// reduce folds entries read in order into the winning one per CID.
func reduce(in []Entry) map[string]Entry {
	m := make(map[string]Entry, len(in))
	for _, e := range in {
		if old, ok := m[e.CID]; !ok || e.newer(old) {
			m[e.CID] = e
		}
	}
	return m
}

func sortEntriesBySeq(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Seq != es[j].Seq {
			return es[i].Seq < es[j].Seq
		}
		return es[i].CID < es[j].CID
	})
}

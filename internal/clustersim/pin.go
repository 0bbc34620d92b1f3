package clustersim

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
)

// Entry is one CID's record in the replicated pinset. Entries merge by
// (Clock, Origin): the larger wins, so a removal stamped after an add wins
// over it wherever the two meet, in any order.
type Entry struct {
	CID      string          `json:"cid"`
	Name     string          `json:"name,omitempty"`
	Time     time.Time       `json:"time"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Deleted  bool            `json:"deleted,omitempty"`
	Clock    uint64          `json:"clock"`
	Origin   string          `json:"origin"`
	// Seq is the local order in which this peer stored the entry; it lets
	// others pull only what changed. Not part of the merge.
	Seq uint64 `json:"seq"`
}

// newer says whether e should replace old.
func (e Entry) newer(old Entry) bool {
	if e.Clock != old.Clock {
		return e.Clock > old.Clock
	}
	return e.Origin > old.Origin
}

// Membership is the raft peer set: peer ID -> cluster multiaddr (may be "").
type Membership struct {
	Peers  map[string]string `json:"peers"`
	Clock  uint64            `json:"clock"`
	Origin string            `json:"origin"`
}

func (m Membership) newer(old Membership) bool {
	if m.Clock != old.Clock {
		return m.Clock > old.Clock
	}
	return m.Origin > old.Origin
}

// IDs lists the member peer IDs in order.
func (m Membership) IDs() []string {
	ids := make([]string, 0, len(m.Peers))
	for id := range m.Peers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (m Membership) clone() Membership {
	c := Membership{Peers: make(map[string]string, len(m.Peers)), Clock: m.Clock, Origin: m.Origin}
	for k, v := range m.Peers {
		c.Peers[k] = v
	}
	return c
}

// ValidateCID checks a CID string as the real API does and returns the error
// text of the release ("error decoding Cid: ...").
func ValidateCID(p Profile, s string) error {
	_, err := cid.Decode(s)
	if err == nil {
		return nil
	}
	msg := err.Error()
	if p.LegacyJSON {
		// Older go-cid did not prefix its errors with "invalid cid: ".
		msg = strings.TrimPrefix(msg, "invalid cid: ")
	}
	return fmt.Errorf("error decoding Cid: %s", msg)
}

// PinJSON renders a pin object in the release's wire form. post marks the
// answer to POST /pins, which differs slightly (metadata {}, origins null,
// timestamp with nanoseconds) from the stored form.
func PinJSON(p Profile, e Entry, post bool) obj {
	var c any = e.CID
	var typ any = "pin"
	if p.LegacyJSON {
		c = obj{{"/", e.CID}}
		typ = 2
	}
	var meta any
	var origins any = []string{}
	ts := e.Time.UTC().Truncate(time.Second).Format(time.RFC3339)
	if post {
		meta = obj{}
		origins = nil
		ts = e.Time.UTC().Format(time.RFC3339Nano)
	}
	if len(e.Metadata) > 0 {
		meta = e.Metadata
	}
	return obj{
		{"replication_factor_min", -1}, {"replication_factor_max", -1},
		{"name", e.Name}, {"mode", "recursive"}, {"shard_size", 0},
		{"user_allocations", nil}, {"expire_at", "0001-01-01T00:00:00Z"},
		{"metadata", meta}, {"pin_update", nil}, {"origins", origins},
		{"cid", c}, {"type", typ}, {"allocations", []string{}},
		{"max_depth", -1}, {"reference", nil}, {"timestamp", ts},
	}
}

// wirePin is the tolerant reader of both pin forms, used by state import.
type wirePin struct {
	CID       json.RawMessage `json:"cid"`
	Name      string          `json:"name"`
	Metadata  json.RawMessage `json:"metadata"`
	Timestamp time.Time       `json:"timestamp"`
}

// ParsePinJSON reads one pin object of any release.
func ParsePinJSON(line []byte) (Entry, error) {
	var w wirePin
	if err := json.Unmarshal(line, &w); err != nil {
		return Entry{}, fmt.Errorf("decoding pin: %w", err)
	}
	var s string
	if err := json.Unmarshal(w.CID, &s); err != nil {
		var legacy struct {
			Slash string `json:"/"`
		}
		if err2 := json.Unmarshal(w.CID, &legacy); err2 != nil {
			return Entry{}, fmt.Errorf("decoding pin cid %s: %w", w.CID, err)
		}
		s = legacy.Slash
	}
	if _, err := cid.Decode(s); err != nil {
		return Entry{}, fmt.Errorf("decoding pin cid %q: %w", s, err)
	}
	meta := w.Metadata
	if string(meta) == "null" || string(meta) == "{}" {
		meta = nil
	}
	return Entry{CID: s, Name: w.Name, Time: w.Timestamp, Metadata: meta}, nil
}

// shortPinsetHides decides, stably per CID, which pins a peer with the
// short-pinset fault leaves out of its views: about one in three.
func shortPinsetHides(c string) bool {
	h := fnv.New32a()
	h.Write([]byte(c))
	return h.Sum32()%3 == 0
}

// visiblePins applies the short-pinset fault to a sorted live pin list:
// about a third fewer, and always at least one fewer.
func visiblePins(pins []Entry, short bool) []Entry {
	if !short || len(pins) == 0 {
		return pins
	}
	out := make([]Entry, 0, len(pins))
	for _, e := range pins {
		if !shortPinsetHides(e.CID) {
			out = append(out, e)
		}
	}
	if len(out) == len(pins) {
		out = out[1:]
	}
	return out
}

package artifacts

import (
	"bytes"
	"crypto/sha256"
	"sort"
)

// Order is the order in which the hosts of a plan take the job of fetching
// one artifact from its source: the first fetches it, the next takes over
// only when every host before it is down, failed, or silent past its turn.
// Every daemon computes the same order from the same plan, with no message
// exchanged. It is rendezvous hashing of the artifact's sha256 with each
// host's peer ID, so that the artifacts of one plan are spread over hosts.
func Order(sha256Hex string, hosts []string) []string {
	type ranked struct {
		id    string
		score [sha256.Size]byte
	}
	rs := make([]ranked, 0, len(hosts))
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		rs = append(rs, ranked{id: h, score: sha256.Sum256([]byte(sha256Hex + "|" + h))})
	}
	sort.Slice(rs, func(i, j int) bool {
		if c := bytes.Compare(rs[i].score[:], rs[j].score[:]); c != 0 {
			return c < 0
		}
		return rs[i].id < rs[j].id
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.id
	}
	return out
}

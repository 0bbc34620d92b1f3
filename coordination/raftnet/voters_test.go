package raftnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
)

func TestVoterTarget(t *testing.T) {
	for _, c := range []struct{ max, healthy, want int }{
		{5, 1, 1}, {5, 2, 1}, {5, 3, 3}, {5, 4, 3}, {5, 5, 5}, {5, 7, 5}, {5, 30, 5},
		{3, 4, 3}, {3, 30, 3}, {1, 9, 1}, {5, 0, 1},
	} {
		if got := voterTarget(c.max, c.healthy); got != c.want {
			t.Errorf("voterTarget(max %d, healthy %d) = %d, want %d", c.max, c.healthy, got, c.want)
		}
	}
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	self := serverView{id: "L", voter: true, self: true, healthy: true}
	voter := func(id string) serverView {
		return serverView{id: raft.ServerID(id), voter: true, healthy: true, healthySince: t0}
	}
	silent := func(id string, d time.Duration) serverView {
		return serverView{id: raft.ServerID(id), voter: true, outOfContact: d}
	}
	spare := func(id string, since time.Duration) serverView {
		return serverView{id: raft.ServerID(id), healthy: true, healthySince: t0.Add(since)}
	}
	down := func(id string) serverView { return serverView{id: raft.ServerID(id), outOfContact: time.Minute} }
	const failAfter = 15 * time.Second
	cases := []struct {
		name     string
		max      int
		servers  []serverView
		kind     changeKind
		demote   string
		promote  string
		whyWords string
	}{
		{name: "five voters of seven: nothing to do", max: 5,
			servers: []serverView{self, voter("a"), voter("b"), voter("c"), voter("d"), spare("e", 0), spare("f", 0)}},
		{name: "below target: the longest healthy non-voter is promoted", max: 5,
			servers: []serverView{self, voter("a"), spare("z", 0), spare("b", time.Second), spare("c", 0)},
			kind:    growVoters, promote: "c", whyWords: "has 2 voters and wants 5"},
		{name: "unhealthy non-voters are not promoted, and healthy voters stay", max: 5,
			servers: []serverView{self, voter("a"), down("b"), down("c")}},
		{name: "silent voter replaced by the first candidate", max: 3,
			servers: []serverView{self, voter("a"), silent("b", 20*time.Second), spare("d", time.Second), spare("c", time.Second)},
			kind:    replaceVoter, demote: "b", promote: "c", whyWords: "daemon b has not answered the raft leader for 20s; replacing it as a voter with c"},
		{name: "the longest silent voter goes first", max: 5,
			servers: []serverView{self, voter("a"), voter("b"), silent("c", 20*time.Second), silent("d", 40*time.Second), spare("e", 0), spare("f", 0)},
			kind:    replaceVoter, demote: "d", promote: "e"},
		{name: "a voter silent for less than the timeout stays", max: 3,
			servers: []serverView{self, voter("a"), silent("b", 14*time.Second), spare("c", 0)}},
		{name: "no healthy non-voter: the silent voter stays", max: 3,
			servers: []serverView{self, voter("a"), silent("b", time.Minute), down("c")},
			kind:    cannotReplace, demote: "b", whyWords: "no healthy non-voter can take its place"},
		{name: "no replacement when the answering voters are not a majority", max: 5,
			servers: []serverView{self, voter("a"), silent("b", time.Minute), silent("c", time.Minute), silent("d", time.Minute), spare("e", 0)}},
		{name: "extra healthy voters are demoted, most recent first", max: 3,
			servers: []serverView{self, voter("a"), voter("b"), {id: "c", voter: true, healthy: true, healthySince: t0.Add(time.Second)}, voter("d")},
			kind:    shrinkVoters, demote: "c", whyWords: "has 5 voters and wants 3"},
		{name: "no shrinking while a voter is unhealthy", max: 3,
			servers: []serverView{self, voter("a"), voter("b"), silent("c", time.Second), voter("d")}},
		{name: "the leader never demotes itself", max: 1,
			servers: []serverView{self, voter("a")},
			kind:    shrinkVoters, demote: "a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := decide(c.servers, c.max, failAfter)
			if got.kind != c.kind || string(got.demote) != c.demote || string(got.promote) != c.promote {
				t.Fatalf("got %+v, want kind %d demote %q promote %q", got, c.kind, c.demote, c.promote)
			}
			if !strings.Contains(got.why, c.whyWords) {
				t.Fatalf("reason %q does not say %q", got.why, c.whyWords)
			}
		})
	}
}

func TestConfigRejectsBadVoterPolicy(t *testing.T) {
	for _, c := range []struct {
		name string
		tune func(*Config)
		want string
	}{
		{"even", func(c *Config) { c.MaxVoters = 4 }, "max voters 4: want an odd number"},
		{"negative", func(c *Config) { c.MaxVoters = -1 }, "max voters -1"},
		{"failure timeout below heartbeat", func(c *Config) { c.VoterFailureTimeout = 100 * time.Millisecond }, "voter failure timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "raft")
			cfg := Config{Dir: dir, Node: &p2p.Node{}, FSM: &listFSM{}, Logger: zap.NewNop()}
			c.tune(&cfg)
			_, err := Start(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a refused configuration created the raft folder (%v)", err)
			}
		})
	}
}

// Compact snapshots once enough entries were added since the last snapshot,
// and drops the log behind it but TrailingLogs entries. (Each command is
// followed by a barrier entry of flushCommits: counts are of entries.)
func TestCompactAfterEnoughEntries(t *testing.T) {
	tune := func(c *Config) {
		steady(c)
		c.TrailingLogs = 2
	}
	m := group(t, 1, testLogger(t), tune)[0]
	for i := range 5 {
		applyVia(t, m, fmt.Sprintf("cmd-%d", i))
	}
	if took, err := m.raft.Compact(1000); err != nil || took {
		t.Fatalf("Compact(1000) after 5 commands: took %v, %v; want no snapshot", took, err)
	}
	if took, err := m.raft.Compact(5); err != nil || !took {
		t.Fatalf("Compact(5) after 5 commands: took %v, %v; want a snapshot", took, err)
	}
	snapped := m.raft.R.LastIndex()
	for i := range 10 {
		applyVia(t, m, fmt.Sprintf("more-%d", i))
	}
	if took, err := m.raft.Compact(1000); err != nil || took {
		t.Fatalf("Compact(1000) 10 commands after a snapshot: took %v, %v; want none", took, err)
	}
	if took, err := m.raft.Compact(10); err != nil || !took {
		t.Fatalf("Compact(10) 10 commands after a snapshot: took %v, %v; want a snapshot", took, err)
	}
	first, err := m.raft.store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first <= snapped {
		t.Fatalf("the log still starts at %d, before the first snapshot's %d: not compacted", first, snapped)
	}
	if !m.fsm.has("cmd-0", "more-9") {
		t.Fatal("the state lost commands in the compaction")
	}
}

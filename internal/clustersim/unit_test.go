package clustersim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.1.6", "1.0.0", 1}, {"0.14.5", "1.0.0", -1}, {"1.0.0", "1.0.0", 0},
		{"v1.0.8", "1.0.10", -1}, {"0.11.0", "0.12.0", -1}, {"1.1.6-rc1", "1.1.6", 0},
		{"2", "1.9.9", 1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestProfileFor(t *testing.T) {
	for _, tc := range []struct {
		v, rpc, ds      string
		legacy, upgrade bool
	}{
		{"0.11.0", "/ipfscluster/0.11/rpc", "badger", true, true},
		{"0.14.5", "/ipfscluster/0.12/rpc", "badger", true, false},
		{"1.0.8", "/ipfscluster/1.0/rpc", "pebble", false, false},
		{"1.1.6", "/ipfscluster/1.0/rpc", "pebble", false, false},
	} {
		p := ProfileFor(tc.v)
		if p.RPCProtocol != tc.rpc || p.DatastoreDir != tc.ds || p.LegacyJSON != tc.legacy || p.StateUpgrade != tc.upgrade {
			t.Errorf("%s: %+v", tc.v, p)
		}
	}
}

type memBackend struct{ appended int }

func (m *memBackend) Append(e []Entry, _ *Membership) error { m.appended += len(e); return nil }
func (m *memBackend) Close() error                          { return nil }

// A removal stamped later wins over an add wherever they meet, in any order.
func TestMergeRemovalWinsOverOlderAdd(t *testing.T) {
	add := Entry{CID: "a", Clock: 1, Origin: "p1"}
	rm := Entry{CID: "a", Clock: 2, Origin: "p2", Deleted: true}
	for _, order := range [][]Entry{{add, rm}, {rm, add}} {
		s := newPinState(loadedState{}, &memBackend{})
		for _, e := range order {
			if _, _, err := s.merge([]Entry{e}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(s.live()); n != 0 {
			t.Errorf("order %v: %d live pins, want 0", order, n)
		}
	}
	// A later local add after the removal wins again.
	s := newPinState(loadedState{Entries: []Entry{rm}}, &memBackend{})
	if _, err := s.stampLocal(Entry{CID: "a"}, "p3"); err != nil {
		t.Fatal(err)
	}
	if len(s.live()) != 1 {
		t.Error("re-add after removal should be live")
	}
}

func TestSincePagesOnlyChanges(t *testing.T) {
	s := newPinState(loadedState{}, &memBackend{})
	for _, c := range []string{"a", "b", "c"} {
		if _, err := s.stampLocal(Entry{CID: c}, "p"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.stampLocal(Entry{CID: "a", Deleted: true}, "p"); err != nil {
		t.Fatal(err)
	}
	epoch, page, last, more := s.pull("", 0, "", 2)
	if len(page) != 2 || !more || page[0].CID != "b" {
		t.Fatalf("first page %+v more=%v", page, more)
	}
	_, page, _, more = s.pull(epoch, last, "", 2)
	if len(page) != 1 || more || page[0].CID != "a" || !page[0].Deleted {
		t.Fatalf("second page %+v more=%v", page, more)
	}
}

func TestVisiblePinsShortFault(t *testing.T) {
	var pins []Entry
	for i := 0; i < 30; i++ {
		pins = append(pins, Entry{CID: strings.Repeat("x", i+1)})
	}
	if got := visiblePins(pins, false); len(got) != 30 {
		t.Errorf("no fault: %d", len(got))
	}
	got := visiblePins(pins, true)
	if len(got) >= 30 || len(got) < 10 {
		t.Errorf("short fault shows %d of 30", len(got))
	}
	if got := visiblePins(pins[:1], true); len(got) != 0 {
		t.Errorf("at least one pin must be missing, got %d of 1", len(got))
	}
}

func TestParsePinJSONBothForms(t *testing.T) {
	const c = "bafkreic3j4iknv3blrjuuzwbcuxg67oghg2vuhdfj2flj2c6ghdlktqzby"
	for _, line := range []string{
		`{"cid":"` + c + `","name":"n","type":"pin"}`,
		`{"cid":{"/":"` + c + `"},"name":"n","type":2}`,
	} {
		e, err := ParsePinJSON([]byte(line))
		if err != nil || e.CID != c || e.Name != "n" {
			t.Errorf("%s: %+v %v", line, e, err)
		}
	}
	if _, err := ParsePinJSON([]byte(`{"cid":"nope"}`)); err == nil {
		t.Error("invalid cid accepted")
	}
}

func TestParseAddr(t *testing.T) {
	a, err := ParseAddr("/ip4/127.0.0.1/tcp/9096/p2p/12D3KooWabc")
	if err != nil || a.HostPort() != "127.0.0.1:9096" || a.PeerID != "12D3KooWabc" {
		t.Errorf("%+v %v", a, err)
	}
	for _, bad := range []string{"", "127.0.0.1:9096", "/ip4/127.0.0.1/udp/1", "/unix/x/tcp/1"} {
		if _, err := ParseAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseFlags(t *testing.T) {
	specs := []flagSpec{{Names: []string{"name", "n"}}, {Names: []string{"force", "f"}, Bool: true}}
	v, pos, err := parseFlags([]string{"--name", "x", "CID", "-f", "--name=y"}, specs)
	if err != nil || v["name"] != "y" || v["force"] != "true" || len(pos) != 1 || pos[0] != "CID" {
		t.Errorf("%v %v %v", v, pos, err)
	}
	if _, _, err := parseFlags([]string{"--nope"}, specs); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestRotateRaftFolderKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 4; i++ {
		if err := os.MkdirAll(filepath.Join(dir, "raft", "snapshots"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := rotateRaftFolder(dir, 2)
		if err != nil || filepath.Base(got) != "raft.old."+string(rune('0'+i)) {
			t.Fatalf("rotation %d: %q %v", i, got, err)
		}
	}
	if b := raftBackups(dir); len(b) != 2 || b[0] != 2 || b[1] != 3 {
		t.Errorf("backups kept: %v", b)
	}
	if got, err := rotateRaftFolder(dir, 2); got != "" || err != nil {
		t.Errorf("missing raft folder: %q %v", got, err)
	}
}

// A crash mid-append leaves a torn last line; loading keeps what was whole.
func TestFileStoreSurvivesTornLog(t *testing.T) {
	dir := t.TempDir()
	st, _, err := openFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Append([]Entry{{CID: "a", Clock: 1}, {CID: "b", Clock: 2}}, nil); err != nil {
		t.Fatal(err)
	}
	st.log.WriteString(`{"e":{"cid":"c","clo`)
	st.log.Close()
	ls, err := readFileStore(dir)
	if err != nil || len(liveOf(reduce(ls.Entries))) != 2 {
		t.Fatalf("%+v %v", ls, err)
	}
}

// Offline readers see only the newest raft snapshot, never the log.
func TestRaftStoreSnapshotsAndReplay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	st, _, err := openRaftStore(dir, 2, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Append(nil, &Membership{Peers: map[string]string{"p": ""}}); err != nil {
		t.Fatal(err)
	}
	for i, c := range []string{"a", "b", "c"} {
		if err := st.Append([]Entry{{CID: c, Clock: uint64(i + 1)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A membership change since the snapshot at 2 pins fails the shutdown one.
	if err := st.Append(nil, &Membership{Peers: map[string]string{"p": "", "q": ""}, Clock: 9}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	_, snap, err := readNewestSnapshot(dir)
	if err != nil || len(snap) != 2 {
		t.Fatalf("snapshot holds %d, want 2 (%v)", len(snap), err)
	}
	st, ls, err := openRaftStore(dir, 2, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if len(ls.Entries) != 3 || len(ls.Membership.Peers) != 2 {
		t.Errorf("replay: %d entries, membership %v", len(ls.Entries), ls.Membership)
	}
}

func TestBuildServiceJSONSections(t *testing.T) {
	for _, v := range []string{"0.14.5", "1.1.6"} {
		b, err := BuildServiceJSON(InitOptions{Profile: ProfileFor(v), Consensus: ConsensusRaft, Secret: "s", Ports: defaultPorts, SelfID: "me",
			Peers: []string{"/ip4/127.0.0.1/tcp/1/p2p/other"}})
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.Contains(s, "pinsvcapi") != (v == "1.1.6") {
			t.Errorf("%s: pinsvcapi presence wrong", v)
		}
		if !strings.Contains(s, `"init_peerset": [`+"\n"+`        "me",`) || strings.Contains(s, `"datastore"`) {
			t.Errorf("%s raft config:\n%s", v, s)
		}
	}
}

// TestPullSkipsWhatTheAskerHolds: a peer whose digest matches gets no
// entries and a cursor at the latest change; one that differs gets them all.
func TestPullSkipsWhatTheAskerHolds(t *testing.T) {
	var es []Entry
	for i, c := range []string{"a", "b", "c"} {
		es = append(es, Entry{CID: c, Clock: uint64(i + 1), Origin: "p"})
	}
	remote := newPinState(loadedState{Entries: es}, &memBackend{})
	// The same entries loaded in another order give the same digest.
	same := newPinState(loadedState{Entries: []Entry{es[2], es[0], es[1]}}, &memBackend{})
	behind := newPinState(loadedState{Entries: es[:2]}, &memBackend{})
	if same.digestString() != remote.digestString() {
		t.Fatalf("same entries, digests %s and %s", same.digestString(), remote.digestString())
	}
	if behind.digestString() == remote.digestString() {
		t.Fatal("a state lacking an entry has the same digest")
	}
	epoch, page, last, more := remote.pull("", 0, same.digestString(), 10)
	if len(page) != 0 || more || last != 3 || epoch != remote.epoch {
		t.Fatalf("matching digest: %d entries, last %d, more %v", len(page), last, more)
	}
	if _, page, _, _ = remote.pull("", 0, behind.digestString(), 10); len(page) != 3 {
		t.Fatalf("digest behind: %d entries, want all 3", len(page))
	}
	// A removal changes the digest, and pulling from the cursor gets it.
	if _, err := remote.stampLocal(Entry{CID: "b", Deleted: true}, "p"); err != nil {
		t.Fatal(err)
	}
	if remote.digestString() == same.digestString() {
		t.Fatal("digest unchanged by a removal")
	}
	if _, page, _, _ = remote.pull(epoch, last, same.digestString(), 10); len(page) != 1 || !page[0].Deleted {
		t.Fatalf("after the removal: %+v", page)
	}
}

// TestPullAfterRestartMissesNothing: seqs are given afresh at load, so a
// cursor taken before the remote restarted must not skip a change that the
// renumbering moved below it.
func TestPullAfterRestartMissesNothing(t *testing.T) {
	store := &memBackend{}
	before := newPinState(loadedState{}, store)
	for _, c := range []string{"a", "b"} {
		if _, err := before.stampLocal(Entry{CID: c}, "p"); err != nil {
			t.Fatal(err)
		}
	}
	epoch, _, last, _ := before.pull("", 0, "", 10) // the asker holds a and b, up to seq 2
	if _, err := before.stampLocal(Entry{CID: "a", Name: "renamed"}, "p"); err != nil {
		t.Fatal(err) // seq 3, which the reload numbers 2
	}
	after := newPinState(loadedState{Epoch: epoch, Entries: before.live()}, &memBackend{})
	_, page, _, _ := after.pull(epoch, last, "", 10)
	for _, e := range page {
		if e.CID == "a" && e.Name == "renamed" {
			return
		}
	}
	t.Fatalf("pull from the old cursor after a restart: %+v, lacks the renamed a", page)
}

// The log level comes from --debug, else --loglevel, else the flag's
// environment variable, as the real service's help text says.
func TestServiceLogLevel(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "IPFS_CLUSTER_LOG_LEVEL" {
				return v
			}
			return ""
		}
	}
	for _, c := range []struct {
		flags map[string]string
		env   string
		want  zapcore.Level
	}{
		{map[string]string{}, "", zapcore.InfoLevel},
		{map[string]string{}, "debug", zapcore.DebugLevel},
		{map[string]string{"loglevel": "error"}, "debug", zapcore.ErrorLevel},
		{map[string]string{"debug": "true", "loglevel": "error"}, "", zapcore.DebugLevel},
		{map[string]string{}, "error,cluster:debug", zapcore.DebugLevel},
		{map[string]string{"loglevel": "warn,pintracker:error"}, "", zapcore.WarnLevel},
		{map[string]string{"loglevel": "nonsense"}, "", zapcore.InfoLevel},
	} {
		if got := logLevel(serviceLogLevel(c.flags, env(c.env))); got != c.want {
			t.Errorf("flags %v, $IPFS_CLUSTER_LOG_LEVEL=%q: level %s, want %s", c.flags, c.env, got, c.want)
		}
	}
}

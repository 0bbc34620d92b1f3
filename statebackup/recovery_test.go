package statebackup

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 24, 11, 0, 0, 0, time.UTC)

func backup(id string, kind Kind, pins int, age time.Duration, verified bool) BackupInfo {
	return BackupInfo{Manifest: &Manifest{ID: id, Kind: kind, Pins: pins, Created: t0.Add(-age), ClusterVersion: "1.0.8"},
		Verified: verified, Problem: map[bool]string{false: "checksum"}[verified]}
}

func host(id string, live int, bs ...BackupInfo) HostInventory {
	return HostInventory{Host: id, Reachable: true, LivePins: live, Consensus: "crdt", Version: "1.0.8", At: t0, Backups: bs}
}

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name       string
		invs       []HostInventory
		wantHost   string
		wantKind   SourceKind
		wantBackup string
		wantErr    error
		reasonHas  []string
		noteHas    []string
	}{
		{name: "most live pins wins", invs: []HostInventory{host("A", 0), host("B", 12), host("C", 0)},
			wantHost: "B", wantKind: SourceLive, reasonHas: []string{"most pins", "live pinset"}},
		{name: "short live pinset loses to a verified backup and is reported",
			invs:     []HostInventory{host("A", 3, backup("b1", KindLiveExport, 10, time.Hour, true)), host("B", 3)},
			wantHost: "A", wantKind: SourceBackup, wantBackup: "b1",
			noteHas: []string{"live pinset of A holds 3 pins, 7 fewer", "not trusted"}},
		{name: "unverified backup is not used however many pins",
			invs:     []HostInventory{host("A", 5, backup("bad", KindLiveExport, 50, time.Minute, false)), host("B", 4)},
			wantHost: "A", wantKind: SourceLive, noteHas: []string{"bad on A failed verification (checksum)"}},
		{name: "equal counts: the fresher wins",
			invs: []HostInventory{host("A", -1, backup("old", KindOfflineExport, 8, 2*time.Hour, true),
				backup("new", KindLiveExport, 8, time.Hour, true))},
			wantHost: "A", wantKind: SourceBackup, wantBackup: "new"},
		{name: "equal counts: live (read now) beats a backup",
			invs:     []HostInventory{host("A", -1, backup("b", KindLiveExport, 8, time.Hour, true)), host("B", 8)},
			wantHost: "B", wantKind: SourceLive, reasonHas: []string{"as many as"}},
		{name: "folder copy only when no counted copy has pins",
			invs: []HostInventory{host("A", 0, backup("f-old", KindStateFolder, -1, 3*time.Hour, true),
				backup("f-new", KindStateFolder, -1, time.Hour, true)), host("B", 0)},
			wantHost: "A", wantKind: SourceFolder, wantBackup: "f-new", reasonHas: []string{"state folder"}},
		{name: "counted copy beats a folder copy",
			invs:     []HostInventory{host("A", 2, backup("f", KindStateFolder, -1, time.Minute, true))},
			wantHost: "A", wantKind: SourceLive},
		{name: "unreachable hosts are set aside and reported",
			invs:     []HostInventory{{Host: "Z", Error: "timeout"}, host("A", 4)},
			wantHost: "A", wantKind: SourceLive, noteHas: []string{"Z did not answer (timeout)"}},
		{name: "nothing with pins and no folder copy", invs: []HostInventory{host("A", 0), host("B", -1)},
			wantErr: ErrNoCopy},
		{name: "nobody answers", invs: []HostInventory{{Host: "A", Error: "x"}}, wantErr: ErrNoCopy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Choose(tc.invs)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Source.Host != tc.wantHost || c.Source.Kind != tc.wantKind || c.Source.Backup != tc.wantBackup {
				t.Fatalf("chose %+v, want %s %s %q", c.Source, tc.wantHost, tc.wantKind, tc.wantBackup)
			}
			for _, s := range tc.reasonHas {
				if !strings.Contains(c.Reason, s) {
					t.Errorf("reason %q lacks %q", c.Reason, s)
				}
			}
			notes := strings.Join(c.Notes, "\n")
			for _, s := range tc.noteHas {
				if !strings.Contains(notes, s) {
					t.Errorf("notes %q lack %q", notes, s)
				}
			}
		})
	}
}

func TestPlanRecovery(t *testing.T) {
	raft := func(h HostInventory) HostInventory { h.Consensus = "raft"; return h }
	for _, tc := range []struct {
		name      string
		invs      []HostInventory
		want      []string // host:action
		untouched []string
		wantErr   string
	}{
		{name: "crdt: clean others, rebuild, verify alone, join each",
			invs: []HostInventory{host("B", 0), host("A", 9), host("C", 0)},
			want: []string{"B:stop-and-clean", "C:stop-and-clean", "A:rebuild", "A:verify", "B:join", "B:verify", "C:join", "C:verify"}},
		{name: "raft: the rebuilt peer is verified once the others joined",
			invs: []HostInventory{raft(host("A", 9)), raft(host("B", 0))},
			want: []string{"B:stop-and-clean", "A:rebuild", "B:join", "B:verify", "A:verify"}},
		{name: "unreachable host is left untouched",
			invs:      []HostInventory{host("A", 9), {Host: "Z", Error: "down"}},
			want:      []string{"A:rebuild", "A:verify"},
			untouched: []string{"Z"}},
		{name: "copy's host must answer", invs: []HostInventory{{Host: "A", Error: "down"}}, wantErr: "did not answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			choice := Choice{Source: Source{Host: "A", Kind: SourceLive, Pins: 9}}
			p, err := PlanRecovery(tc.invs, choice)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range p.Steps {
				got = append(got, s.Host+":"+string(s.Action))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("steps\n %v\nwant\n %v", got, tc.want)
			}
			if strings.Join(p.Untouched, ",") != strings.Join(tc.untouched, ",") || p.Rebuild != "A" || p.Expected != 9 {
				t.Fatalf("untouched %v rebuild %s expected %d", p.Untouched, p.Rebuild, p.Expected)
			}
		})
	}
}

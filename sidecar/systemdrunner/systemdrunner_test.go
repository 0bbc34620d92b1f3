package systemdrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/sidecar"
)

// fakeSystemctl is a shell script acting like systemctl for the units listed
// in its state folder; it records every call and, on start, the extra
// arguments file as the unit would have read it.
const fakeSystemctl = `#!/bin/sh
S=%q
ENVFILE=%q
echo "$*" >> "$S/calls"
cmd=$1; shift
case "$cmd" in
show)
	props=$2; unit=$3
	known=no; grep -qx "$unit" "$S/units" && known=yes
	state=$(cat "$S/state" 2>/dev/null || echo inactive)
	for p in $(echo "$props" | tr ',' ' '); do
		case $p in
		LoadState) if [ $known = yes ]; then echo LoadState=loaded; else echo LoadState=not-found; fi ;;
		MainPID) if [ "$state" = active ]; then echo MainPID=4242; else echo MainPID=0; fi ;;
		ActiveEnterTimestamp) echo "ActiveEnterTimestamp=Tue 2026-11-24 11:44:08 UTC" ;;
		NRestarts) echo NRestarts=$(cat "$S/restarts" 2>/dev/null || echo 0) ;;
		Result) echo Result=$(cat "$S/result" 2>/dev/null || echo success) ;;
		esac
	done ;;
start)
	if ! grep -qx "$1" "$S/units"; then echo "Failed to start $1: Unit $1 not found." >&2; exit 5; fi
	if [ -e "$S/fail-start" ]; then echo "Job for $1 failed because the control process exited with error code." >&2; exit 1; fi
	if [ -n "$ENVFILE" ] && [ -e "$ENVFILE" ]; then echo "env: $(cat "$ENVFILE")" >> "$S/calls"; fi
	echo active > "$S/state" ;;
stop)
	echo inactive > "$S/state" ;;
is-active)
	state=$(cat "$S/state" 2>/dev/null || echo inactive)
	echo "$state"; [ "$state" = active ] ;;
*)
	echo "Unknown command verb $cmd." >&2; exit 1 ;;
esac
`

type fake struct {
	dir     string
	envFile string
	runner  *Runner
}

func newFake(t *testing.T, unit string, withEnvFile bool) *fake {
	t.Helper()
	f := &fake{dir: t.TempDir()}
	if withEnvFile {
		f.envFile = filepath.Join(f.dir, "peer.env")
	}
	script := filepath.Join(f.dir, "systemctl")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(fakeSystemctl, f.dir, f.envFile)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "units"), []byte("ipfs-cluster.service\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Unit: unit, Systemctl: script, ExtraArgsFile: f.envFile})
	if err != nil {
		t.Fatal(err)
	}
	f.runner = r
	return f
}

func (f *fake) calls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStartStopStatus(t *testing.T) {
	f := newFake(t, "ipfs-cluster.service", false)
	r := f.runner
	st, err := r.Status(ctx(t))
	if err != nil || st.Running || st.PID != 0 {
		t.Fatalf("before start: %+v, %v", st, err)
	}
	if err := r.Start(ctx(t), sidecar.StartOptions{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st, err = r.Status(ctx(t))
	want := time.Date(2026, 11, 24, 11, 44, 8, 0, time.UTC)
	if err != nil || !st.Running || st.PID != 4242 || !st.Since.Equal(want) {
		t.Fatalf("after start: %+v, %v", st, err)
	}
	if err := r.Stop(ctx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Stop(ctx(t)); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	st, err = r.Status(ctx(t))
	if err != nil || st.Running {
		t.Fatalf("after stop: %+v, %v", st, err)
	}
	calls := f.calls(t)
	for _, want := range []string{
		"start ipfs-cluster.service",
		"stop ipfs-cluster.service",
		"is-active ipfs-cluster.service",
		"show -p MainPID,ActiveEnterTimestamp,NRestarts,Result ipfs-cluster.service",
		"show -p LoadState ipfs-cluster.service",
	} {
		if !contains(calls, want) {
			t.Errorf("systemctl never called with %q; calls: %q", want, calls)
		}
	}
}

func TestFailedStartCarriesSystemctlOutput(t *testing.T) {
	f := newFake(t, "ipfs-cluster.service", false)
	os.WriteFile(filepath.Join(f.dir, "fail-start"), nil, 0o644)
	os.WriteFile(filepath.Join(f.dir, "result"), []byte("exit-code\n"), 0o644)
	err := f.runner.Start(ctx(t), sidecar.StartOptions{})
	if err == nil || !strings.Contains(err.Error(), "control process exited with error code") {
		t.Fatalf("Start error %v does not carry systemctl's output", err)
	}
	st, err := f.runner.Status(ctx(t))
	if err != nil || st.Running || !strings.Contains(st.LastExit, "exit-code") {
		t.Fatalf("status after failed start: %+v, %v", st, err)
	}
}

func TestUnknownUnitIsAClearError(t *testing.T) {
	f := newFake(t, "no-such.service", false)
	ops := map[string]func() error{
		"start":  func() error { return f.runner.Start(ctx(t), sidecar.StartOptions{}) },
		"stop":   func() error { return f.runner.Stop(ctx(t)) },
		"status": func() error { _, err := f.runner.Status(ctx(t)); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrUnitNotFound) || !strings.Contains(err.Error(), "no-such.service") {
			t.Errorf("%s: %v, want ErrUnitNotFound naming the unit", name, err)
		}
	}
	for _, c := range f.calls(t) {
		if strings.HasPrefix(c, "start") || strings.HasPrefix(c, "stop") {
			t.Errorf("systemctl %q called for a unit that does not exist", c)
		}
	}
}

func TestExtraArgsForOneStartOnly(t *testing.T) {
	f := newFake(t, "ipfs-cluster.service", true)
	ma := "/ip4/127.0.0.1/tcp/9096/p2p/12D3KooWExample"
	if err := f.runner.Start(ctx(t), sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", ma}}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if want := "env: " + ExtraArgsVar + "=--bootstrap " + ma; !contains(f.calls(t), want) {
		t.Errorf("unit did not see %q at start; calls: %q", want, f.calls(t))
	}
	b, err := os.ReadFile(f.envFile)
	if err != nil || strings.TrimSpace(string(b)) != ExtraArgsVar+"=" {
		t.Errorf("extra arguments not cleared after the start: %q, %v", b, err)
	}
	if err := f.runner.Start(ctx(t), sidecar.StartOptions{ExtraArgs: []string{"has space"}}); err == nil {
		t.Error("an argument with whitespace was accepted")
	}
	noFile := newFake(t, "ipfs-cluster.service", false)
	if err := noFile.runner.Start(ctx(t), sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", ma}}); err == nil {
		t.Error("extra arguments accepted without an extra-arguments file")
	}
}

func TestParseTimestamp(t *testing.T) {
	cases := []struct {
		in   string
		want time.Time
	}{
		{"Tue 2026-11-24 11:44:08 UTC", time.Date(2026, 11, 24, 11, 44, 8, 0, time.UTC)},
		{"", time.Time{}},
		{"n/a", time.Time{}},
	}
	for _, c := range cases {
		if got := parseTimestamp(c.in); !got.Equal(c.want) {
			t.Errorf("parseTimestamp(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

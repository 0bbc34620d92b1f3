package systemdtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func checkHardening(t *testing.T, ctx context.Context, s *site) {
	h := s.hosts[0]
	if out, err := h.Sh(ctx, "systemd-analyze verify /lib/systemd/system/upgraded.service /lib/systemd/system/ipfs-cluster.service"); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, h := range s.hosts {
		for unit, want := range map[string]map[string]string{
			"upgraded.service": {"User": "upgraded", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
				"PrivateTmp": "yes", "ProtectHome": "yes", "Restart": "on-failure", "ActiveState": "active",
				"ReadWritePaths": "/var/lib/upgraded /var/lib/ipfs-cluster", "KillMode": "process"},
			"ipfs-cluster.service": {"User": "ipfs-cluster", "ActiveState": "active",
				"ExecStart": "/var/lib/upgraded/bin/current/ipfs-cluster-service"},
		} {
			var props []string
			for k := range want {
				props = append(props, k)
			}
			got, err := h.Show(ctx, unit, append(props, "MainPID")...)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range want {
				if !strings.Contains(got[k], v) {
					t.Errorf("%s %s: %s=%q, want %q", h.Name, unit, k, got[k], v)
				}
			}
			user := want["User"]
			out, err := h.Sh(ctx, fmt.Sprintf("test %s != 0 && awk '/^Uid:/{print $2}' /proc/%s/status; id -u %s", got["MainPID"], got["MainPID"], user))
			f := strings.Fields(out)
			if err != nil || len(f) != 2 || f[0] != f[1] || f[0] == "0" {
				t.Errorf("%s %s: main process uid vs uid of %s: %q %v", h.Name, unit, user, out, err)
			}
		}
	}
}

// checkNarrowRight: the polkit rule lets upgraded's user manage the peer's
// unit and nothing else.
func checkNarrowRight(t *testing.T, ctx context.Context, s *site) {
	h := s.hosts[0]
	for _, unit := range []string{"dbus.service", "systemd-journald.service", "upgraded.service", "polkit.service"} {
		out, err := h.As(ctx, "upgraded", "systemctl", "--no-ask-password", "stop", unit)
		if err == nil {
			t.Errorf("user upgraded stopped %s: %s", unit, out)
		}
		if st, _ := h.Show(ctx, unit, "ActiveState"); st["ActiveState"] != "active" {
			t.Errorf("%s is %q after user upgraded's refused stop", unit, st["ActiveState"])
		}
	}
	if out, err := h.As(ctx, "upgraded", "upgraded", "service", "check", "--config", "/var/lib/upgraded"); err != nil {
		t.Errorf("service check as upgraded: %v\n%s", err, out)
	}
}

// checkBadInput: a wrong unit name and a missing rule are refused by
// `service check`, and so by upgraded.service's ExecStartPre, with the
// running peer untouched.
func checkBadInput(t *testing.T, ctx context.Context, s *site) {
	h := s.hosts[2]
	before, err := h.Show(ctx, "ipfs-cluster.service", "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	script := `mkdir -p /var/lib/upgraded/badcfg && sed 's/ipfs-cluster.service/no-such-peer.service/' /var/lib/upgraded/upgraded.json > /var/lib/upgraded/badcfg/upgraded.json && chown -R upgraded /var/lib/upgraded/badcfg`
	if _, err := h.Sh(ctx, script); err != nil {
		t.Fatal(err)
	}
	out, err := h.As(ctx, "upgraded", "upgraded", "service", "check", "--config", "/var/lib/upgraded/badcfg")
	if err == nil || !strings.Contains(out, "no-such-peer.service") || !strings.Contains(out, "not found") {
		t.Errorf("check with a unit that does not exist: %v\n%s", err, out)
	}
	// The daemon itself, run without the unit's ExecStartPre, refuses too.
	badUnit := initSpare(t, ctx, h, "/var/lib/upgraded/bad-unit", "no-such-peer.service")
	spare := initSpare(t, ctx, h, "/var/lib/upgraded/spare", "ipfs-cluster.service")
	defer h.Sh(ctx, "rm -rf /var/lib/upgraded/bad-unit /var/lib/upgraded/spare") //nolint:errcheck // best effort
	runSpare(t, ctx, h, badUnit, "no-such-peer.service", "not found")
	if _, err := h.Sh(ctx, "rm -rf /var/lib/upgraded/badcfg && mv /usr/share/polkit-1/rules.d/50-upgraded.rules /root/ && systemctl restart polkit"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = WaitFor(wctx, "service check refused without the polkit rule", func() (bool, string) {
		out, err := h.As(wctx, "upgraded", "upgraded", "service", "check", "--config", "/var/lib/upgraded")
		return err != nil && strings.Contains(out, "50-upgraded.rules"), out
	})
	if err != nil {
		t.Error(err)
	}
	runSpare(t, ctx, h, spare, "50-upgraded.rules", "refused")
	// The daemon's unit refuses to start without the right; the peer runs on.
	if out, err := h.Sh(ctx, "systemctl restart upgraded.service"); err == nil {
		t.Errorf("upgraded.service started without the polkit rule: %s", out)
	}
	after, err := h.Show(ctx, "ipfs-cluster.service", "MainPID", "ActiveState")
	if err != nil || after["MainPID"] != before["MainPID"] || after["ActiveState"] != "active" {
		t.Errorf("peer touched: MainPID %s -> %v (%v)", before["MainPID"], after, err)
	}
	if _, err := h.Sh(ctx, "mv /root/50-upgraded.rules /usr/share/polkit-1/rules.d/ && systemctl restart polkit && systemctl reset-failed upgraded.service; systemctl start upgraded.service"); err != nil {
		t.Errorf("restoring the rule: %v", err)
	}
}

// initSpare makes a config folder for a second daemon on h, of its own
// identity and port, not joined to the others, driving unit.
func initSpare(t *testing.T, ctx context.Context, h Host, dir, unit string) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.As(ctx, "upgraded", "upgraded", "init", "--config", dir, "--cluster-config", "/var/lib/ipfs-cluster",
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port), "--service-bin", "/opt/sim/ipfs-cluster-service",
		"--runner", "systemd", "--unit", unit)
	if err != nil {
		t.Fatalf("init of a spare daemon in %s: %v\n%s", dir, err, out)
	}
	return dir
}

// runSpare runs `upgraded daemon` on config folder dir as user upgraded and
// requires it to stop by itself with an error holding every word of want.
func runSpare(t *testing.T, ctx context.Context, h Host, dir string, want ...string) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := h.As(rctx, "upgraded", "timeout", "30", "upgraded", "daemon", "--config", dir)
	for _, w := range want {
		if err == nil || !strings.Contains(out, w) {
			t.Errorf("upgraded daemon --config %s should stop at once naming %q: %v\n%s", dir, want, err, out)
			return
		}
	}
	if strings.Contains(out, "daemon running") {
		t.Errorf("upgraded daemon --config %s ran before refusing:\n%s", dir, out)
	}
}

// checkServiceInstall: `upgraded service install` writes the hardened unit,
// enabled, and it comes back by itself after the host restarts.
func checkServiceInstall(t *testing.T, ctx context.Context, s *site) {
	h := s.hosts[0]
	if out, err := h.Sh(ctx, "upgraded service install --config /var/lib/upgraded"); err != nil {
		t.Fatalf("service install: %v\n%s", err, out)
	}
	if out, err := h.Sh(ctx, "systemd-analyze verify /etc/systemd/system/upgraded.service && grep -q '^ProtectSystem=strict' /etc/systemd/system/upgraded.service"); err != nil {
		t.Errorf("installed unit: %v\n%s", err, out)
	}
	if _, err := h.E.Run(ctx, nil, "podman", "restart", "-t", "20", h.Name); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := WaitFor(wctx, "upgraded active from the installed unit after restart", func() (bool, string) {
		st, err := h.Show(wctx, "upgraded.service", "ActiveState", "UnitFileState", "FragmentPath", "User")
		return err == nil && st["ActiveState"] == "active" && st["UnitFileState"] == "enabled" &&
			st["FragmentPath"] == "/etc/systemd/system/upgraded.service" && st["User"] == "upgraded", fmt.Sprint(st, err)
	})
	if err != nil {
		t.Error(err)
	}
	out, err := h.Sh(ctx, "upgraded service status --config /var/lib/upgraded")
	if err != nil || !strings.Contains(out, "running") {
		t.Errorf("service status: %q %v", out, err)
	}
}

// checkPurge: dpkg --purge removes binary, units, rule and users, and
// leaves upgraded.json, the identity and the backups, owned by root.
func checkPurge(t *testing.T, ctx context.Context, s *site) {
	h := s.hosts[1]
	if out, err := h.Sh(ctx, "dpkg --purge upgraded"); err != nil {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	for _, gone := range []string{"/usr/bin/upgraded", "/lib/systemd/system/upgraded.service",
		"/lib/systemd/system/ipfs-cluster.service", "/usr/share/polkit-1/rules.d/50-upgraded.rules",
		"/etc/systemd/system/multi-user.target.wants/upgraded.service"} {
		if out, err := h.Sh(ctx, "test ! -e "+gone+" && test ! -L "+gone); err != nil {
			t.Errorf("%s left after purge: %v %s", gone, err, out)
		}
	}
	if out, err := h.Sh(ctx, "getent passwd upgraded ipfs-cluster; getent group upgraded ipfs-cluster"); strings.TrimSpace(out) != "" {
		t.Errorf("users or groups left after purge: %q %v", out, err)
	}
	out, err := h.Sh(ctx, "ls -A /var/lib/upgraded")
	if got := strings.Join(strings.Fields(out), " "); err != nil || got != "backups identity.key upgraded.json" {
		t.Errorf("/var/lib/upgraded after purge holds %q (%v), want backups identity.key upgraded.json", got, err)
	}
	if out, err := h.Sh(ctx, "find /var/lib /etc /usr -xdev \\( -nouser -o -nogroup \\) -print"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("files of removed users after purge: %q %v", out, err)
	}
}

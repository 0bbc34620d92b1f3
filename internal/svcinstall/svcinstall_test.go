package svcinstall

import (
	"strings"
	"testing"
)

func TestUnitKeepsHardeningAndMovesPaths(t *testing.T) {
	u, err := Unit(Options{ConfigDir: "/srv/upg", ClusterDir: "/srv/cluster", Executable: "/opt/upgraded", User: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=svc\n", "ExecStart=/opt/upgraded daemon --config /srv/upg\n",
		"ExecStartPre=/opt/upgraded service check --config /srv/upg\n", "ReadWritePaths=/srv/upg /srv/cluster\n",
		"NoNewPrivileges=true\n", "ProtectSystem=strict\n", "PrivateTmp=true\n", "ProtectHome=true\n",
		"Restart=on-failure\n", "KillMode=process\n", "ConditionPathExists=/srv/upg/upgraded.json\n"} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q:\n%s", want, u)
		}
	}
	for _, gone := range []string{"/var/lib/upgraded", "/var/lib/ipfs-cluster", "/usr/bin/upgraded", "User=upgraded"} {
		if strings.Contains(u, gone) {
			t.Errorf("unit still holds %q", gone)
		}
	}
}

func TestUnitRefusesBadOptions(t *testing.T) {
	ok := Options{ConfigDir: "/a", ClusterDir: "/b", Executable: "/c"}
	cases := map[string]func(o *Options){
		"root user":          func(o *Options) { o.User = "root" },
		"relative config":    func(o *Options) { o.ConfigDir = "var/lib/upgraded" },
		"space in path":      func(o *Options) { o.ClusterDir = "/srv/my cluster" },
		"percent in path":    func(o *Options) { o.Executable = "/opt/%h/upgraded" },
		"slash in name":      func(o *Options) { o.Name = "a/b" },
		"missing executable": func(o *Options) { o.Executable = "" },
	}
	for name, edit := range cases {
		o := ok
		edit(&o)
		if _, err := Unit(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Unit(ok); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

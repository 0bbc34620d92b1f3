package config

import (
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := Default(dir)
	c.ClusterConfig = "/var/lib/ipfs-cluster"
	c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/9099/p2p/12D3KooWHFka2tF6YtX6PC3Y7yQLzShTeRT1V5Hmx7cxByVdn1hS"}
	c.Trust = []string{"12D3KooWHFka2tF6YtX6PC3Y7yQLzShTeRT1V5Hmx7cxByVdn1hS"}
	c.Timeouts.Verify = 42 * time.Second
	c.Runner = Runner{Type: RunnerSystemd, Unit: "ipfs-cluster.service", StopTimeout: 7 * time.Second}
	c.Backups = Backups{Interval: 6 * time.Hour, Keep: 4}
	c.Raft = Raft{MaxVoters: 3, VoterFailureTimeout: 40 * time.Second, HeartbeatTimeout: 3 * time.Second}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.ToJSON()
	b, _ := got.ToJSON()
	if string(a) != string(b) {
		t.Fatalf("round trip changed the config:\n%s\n---\n%s", a, b)
	}
	if !strings.Contains(string(a), `"verify": "42s"`) || !strings.Contains(string(a), `"interval": "6h0m0s"`) {
		t.Fatalf("durations should be strings like service.json's: %s", a)
	}
	if got.Backups != c.Backups {
		t.Fatalf("backups section: got %+v, want %+v", got.Backups, c.Backups)
	}
	if got.Raft != c.Raft || !strings.Contains(string(a), `"voter_failure_timeout": "40s"`) ||
		!strings.Contains(string(a), `"heartbeat_timeout": "3s"`) {
		t.Fatalf("raft section: got %+v, want %+v, in %s", got.Raft, c.Raft, a)
	}
}

// TestRaftDefaultsWhenAbsent: an upgraded.json from before the raft section
// loads with 5 voters at most and a 15s voter failure timeout.
func TestRaftDefaultsWhenAbsent(t *testing.T) {
	c := Default("/x")
	if err := c.LoadJSON([]byte(`{"cluster_config":"/c"}`)); err != nil {
		t.Fatal(err)
	}
	if c.Raft.MaxVoters != 5 || c.Raft.VoterFailureTimeout != 15*time.Second || c.Validate() != nil {
		t.Fatalf("raft = %+v (%v), want 5 voters at most and 15s", c.Raft, c.Validate())
	}
	if err := c.LoadJSON([]byte(`{"cluster_config":"/c","raft":{"voter_failure_timeout":"soon"}}`)); err == nil ||
		!strings.Contains(err.Error(), "raft.voter_failure_timeout") {
		t.Fatalf("want a raft.voter_failure_timeout error, got %v", err)
	}
}

// TestBackupsDefaultWhenAbsent: an upgraded.json written before the backups section existed loads with scheduled
// backups off and the default retention.
func TestBackupsDefaultWhenAbsent(t *testing.T) {
	c := Default("/x")
	if err := c.LoadJSON([]byte(`{"cluster_config":"/c"}`)); err != nil {
		t.Fatal(err)
	}
	if c.Backups.Interval != 0 || c.Backups.Keep != 10 {
		t.Fatalf("backups = %+v, want interval 0 (off) and keep 10", c.Backups)
	}
	if err := c.LoadJSON([]byte(`{"cluster_config":"/c","backups":{"interval":"often"}}`)); err == nil ||
		!strings.Contains(err.Error(), "backups.interval") {
		t.Fatalf("want a backups.interval error, got %v", err)
	}
}

func TestValidateSaysWhatIsWrong(t *testing.T) {
	cases := map[string]func(c *Config){
		"cluster_config":             func(c *Config) { c.ClusterConfig = "" },
		"listen_multiaddress":        func(c *Config) { c.Listen = []string{"not-an-addr"} },
		"runner.type":                func(c *Config) { c.Runner.Type = "kubernetes" },
		"timeouts.barrier":           func(c *Config) { c.Timeouts.Barrier = -time.Second },
		"verify":                     func(c *Config) { c.Timeouts.Verify = 0 },
		"log_format":                 func(c *Config) { c.LogFormat = "xml" },
		"backups.interval":           func(c *Config) { c.Backups.Interval = -time.Minute },
		"backups.keep":               func(c *Config) { c.Backups.Keep = 0 },
		"raft.max_voters 4":          func(c *Config) { c.Raft.MaxVoters = 4 },
		"raft.max_voters 0":          func(c *Config) { c.Raft.MaxVoters = 0 },
		"raft.voter_failure_timeout": func(c *Config) { c.Raft.VoterFailureTimeout = 100 * time.Millisecond },
		"raft.heartbeat_timeout":     func(c *Config) { c.Raft.HeartbeatTimeout = 10 * time.Millisecond },
		"raft.voter_failure_timeout 2s": func(c *Config) {
			c.Raft.HeartbeatTimeout = 3 * time.Second
			c.Raft.VoterFailureTimeout = 2 * time.Second
		},
	}
	for want, mutate := range cases {
		c := Default(t.TempDir())
		c.ClusterConfig = "/x"
		mutate(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
}

func TestLoadRejectsBadDuration(t *testing.T) {
	c := Default("/x")
	if err := c.LoadJSON([]byte(`{"cluster_config":"/c","timeouts":{"verify":"soon"}}`)); err == nil ||
		!strings.Contains(err.Error(), "timeouts.verify") {
		t.Fatalf("want a timeouts.verify error, got %v", err)
	}
}

func TestDockerRunnerRoundTripAndChecks(t *testing.T) {
	dir := t.TempDir()
	c := Default(dir)
	c.ClusterConfig = "/data/ipfs-cluster"
	c.Runner.Type = RunnerDocker
	c.Runner.Docker = Docker{Socket: "unix:///run/podman/podman.sock", Container: "cluster0", ServicePath: "/bin/ipfs-cluster-service"}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Runner.Docker != c.Runner.Docker {
		t.Fatalf("docker section: got %+v, want %+v", got.Runner.Docker, c.Runner.Docker)
	}
	// Absent keys keep the defaults.
	d := Default("/x")
	if err := d.LoadJSON([]byte(`{"cluster_config":"/c","runner":{"type":"docker","docker":{"container":"peer"}}}`)); err != nil {
		t.Fatal(err)
	}
	if d.Runner.Docker.Socket != "unix:///var/run/docker.sock" || d.Runner.Docker.Container != "peer" || d.Validate() != nil {
		t.Fatalf("defaults not kept: %+v (%v)", d.Runner.Docker, d.Validate())
	}
	for want, mutate := range map[string]func(*Docker){
		"runner.docker.socket":       func(d *Docker) { d.Socket = "tcp://127.0.0.1:2375" },
		"runner.docker.container":    func(d *Docker) { d.Container = "" },
		"runner.docker.service_path": func(d *Docker) { d.ServicePath = "ipfs-cluster-service" },
	} {
		c := Default("/x")
		c.ClusterConfig = "/c"
		c.Runner.Type = RunnerDocker
		mutate(&c.Runner.Docker)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
}

// TestConnectedDaemons: absent, the daemon keeps 128 others connected; a value
// survives a save and a load; fewer than 2 is refused in words.
func TestConnectedDaemons(t *testing.T) {
	c := Default("/x")
	if err := c.LoadJSON([]byte(`{"cluster_config":"/c"}`)); err != nil {
		t.Fatal(err)
	}
	if c.ConnectedDaemons != 128 || c.Validate() != nil {
		t.Fatalf("connected daemons = %d (%v), want 128 by default", c.ConnectedDaemons, c.Validate())
	}
	dir := t.TempDir()
	c = Default(dir)
	c.ClusterConfig = "/var/lib/ipfs-cluster"
	c.ConnectedDaemons = 12
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ConnectedDaemons != 12 {
		t.Fatalf("connected daemons after a round trip = %d, want 12", got.ConnectedDaemons)
	}
	for _, bad := range []string{`1`, `-3`} {
		c := Default("/x")
		if err := c.LoadJSON([]byte(`{"cluster_config":"/c","connected_daemons":` + bad + `}`)); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "connected_daemons "+bad+": want at least 2") {
			t.Fatalf("connected_daemons %s: want a clear refusal, got %v", bad, err)
		}
	}
}

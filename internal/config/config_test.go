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
	if !strings.Contains(string(a), `"verify": "42s"`) {
		t.Fatalf("durations should be strings like service.json's: %s", a)
	}
}

func TestValidateSaysWhatIsWrong(t *testing.T) {
	cases := map[string]func(c *Config){
		"cluster_config":      func(c *Config) { c.ClusterConfig = "" },
		"listen_multiaddress": func(c *Config) { c.Listen = []string{"not-an-addr"} },
		"runner.type":         func(c *Config) { c.Runner.Type = "kubernetes" },
		"timeouts.barrier":    func(c *Config) { c.Timeouts.Barrier = -time.Second },
		"verify":              func(c *Config) { c.Timeouts.Verify = 0 },
		"log_format":          func(c *Config) { c.LogFormat = "xml" },
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

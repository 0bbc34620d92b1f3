// Package config is upgraded's own configuration: upgraded.json in the config
// folder, shaped to look at home next to IPFS Cluster's service.json
// (durations as strings, sections per component, Default/Validate/JSON).
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/upgraded/upgraded/coordination/plan"
)

// FileName is the configuration file inside the config folder.
const FileName = "upgraded.json"

// Runner kinds.
const (
	RunnerExec    = "exec"
	RunnerSystemd = "systemd"
	RunnerDocker  = "docker"
)

// Config is everything a daemon needs to know. Paths are absolute once loaded.
type Config struct {
	Dir string `json:"-"` // the config folder itself

	ClusterConfig string   // IPFS Cluster config folder (service.json, identity.json, state)
	Listen        []string // multiaddrs of the daemons' swarm
	Bootstrap     []string // other daemons to join (full /p2p multiaddrs); empty: found a new group
	Trust         []string // peer IDs whose signed announcements are accepted
	// ConnectedDaemons is how many of the other daemons (learnt from their
	// address advertisements) each daemon keeps connected, besides its
	// bootstrap peers; the rest are dialed only when needed. Each daemon's
	// choice is a stable, well-spread one, so the daemons stay one network
	// when any of them is down. 128 by default (every daemon of all but the
	// largest clusters: a daemon that must dial another in the middle of a
	// loaded upgrade may time out), at least 2; lower it to save ~300 KB per
	// daemon not kept.
	ConnectedDaemons int
	// Approvals is how many distinct trusted keys must sign a plan before it
	// starts (the two-person rule); 1 is one operator's announcement alone.
	Approvals int
	// ProposalTTL is how long a plan waits for its approvals when Approvals > 1.
	ProposalTTL time.Duration

	Runner Runner

	Timeouts Timeouts
	Backups  Backups
	Raft     Raft
	// AnnouncementTTL is how long an announcement stays valid after signing.
	AnnouncementTTL time.Duration
	// StopPeerOnExit stops the cluster peer when the daemon exits (exec runner).
	// Off by default: stopping upgraded never takes the cluster down.
	StopPeerOnExit bool
	// Windows are the maintenance windows (UTC, e.g. "Mon-Fri 02:00-05:00")
	// in which a plan may start; none: any time. The same on every host.
	Windows []string
	// MetricsAddress serves Prometheus /metrics and /healthz (host:port);
	// empty: off.
	MetricsAddress string
	// LogFormat is "console" or "json".
	LogFormat string
}

// Runner says how the cluster peer is run on this host.
type Runner struct {
	Type        string        // exec, systemd or docker
	Unit        string        // systemd unit, for the systemd runner
	StopTimeout time.Duration // SIGTERM, then SIGKILL after this
	Docker      Docker        // for the docker runner
}

// Docker says where the engine is and which container runs the peer.
type Docker struct {
	Socket    string // the Docker Engine API socket, unix:///path
	Container string // name of the cluster peer's container
	// ServicePath is where images hold ipfs-cluster-service.
	ServicePath string
}

// Backups say how often the daemon backs up the live pinset on its own, besides the backups every plan takes,
// and how many it keeps.
type Backups struct {
	// Interval between scheduled live backups; 0 turns them off.
	Interval time.Duration
	// Keep is how many of the newest backups pruning keeps; every backup of the last plan is kept as well.
	Keep int
}

// Raft shapes the daemons' raft group: a few voters, every other daemon a
// non-voter that receives the log without voting, so that agreement stays as
// fast in a large cluster as in a small one.
type Raft struct {
	// MaxVoters caps the voters: an odd number, 5 by default (3 is the other
	// sensible value). The leader reads its own value.
	MaxVoters int
	// VoterFailureTimeout is how long a voter may leave the leader unanswered
	// before a healthy non-voter replaces it.
	VoterFailureTimeout time.Duration
	// HeartbeatTimeout is how long a follower waits for the leader before it
	// calls an election (also the election timeout and the leader lease). 1s suits a LAN; raise it across slow links or on hosts so
	// loaded that the daemon is not scheduled for a second.
	HeartbeatTimeout time.Duration
}

// Timeouts bound each phase of a plan.
type Timeouts struct {
	Prepare  time.Duration
	Switch   time.Duration
	Rollback time.Duration
	Barrier  time.Duration // delay from the switch's commit to the common stop, for every host to learn it
	Verify   time.Duration // how long a started peer has to prove itself healthy
}

// Default returns a configuration for dir with every default set.
func Default(dir string) *Config {
	return &Config{
		Dir:    dir,
		Listen: []string{"/ip4/0.0.0.0/tcp/9099"},
		Runner: Runner{Type: RunnerExec, Unit: "ipfs-cluster.service", StopTimeout: 30 * time.Second,
			Docker: Docker{Socket: "unix:///var/run/docker.sock", Container: "ipfs-cluster",
				ServicePath: "/usr/local/bin/ipfs-cluster-service"}},
		Timeouts: Timeouts{Prepare: 10 * time.Minute, Switch: 5 * time.Minute, Rollback: 5 * time.Minute,
			Barrier: 300 * time.Millisecond, Verify: 2 * time.Minute},
		Backups:          Backups{Interval: 0, Keep: 10},
		Raft:             Raft{MaxVoters: 5, VoterFailureTimeout: 15 * time.Second, HeartbeatTimeout: time.Second},
		ConnectedDaemons: 128, // p2p.DefaultKeep
		AnnouncementTTL:  time.Hour,
		Approvals:        1,
		ProposalTTL:      24 * time.Hour,
		LogFormat:        "console",
	}
}

// Validate checks the configuration and says what is wrong in words.
func (c *Config) Validate() error {
	var errs []error
	if c.ClusterConfig == "" {
		errs = append(errs, errors.New("cluster_config: the IPFS Cluster config folder is required"))
	}
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("listen_multiaddress: at least one address is required"))
	}
	for _, a := range c.Listen {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen_multiaddress %q: %w", a, err))
		}
	}
	for _, a := range c.Bootstrap {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("bootstrap %q: %w", a, err))
		}
	}
	if c.ConnectedDaemons < 2 {
		errs = append(errs, fmt.Errorf("connected_daemons %d: want at least 2, or the daemons may split into groups that cannot hear each other", c.ConnectedDaemons))
	}
	switch c.Runner.Type {
	case RunnerExec, RunnerSystemd:
	case RunnerDocker:
		d := c.Runner.Docker
		if !strings.HasPrefix(d.Socket, "unix:///") {
			errs = append(errs, fmt.Errorf("runner.docker.socket %q: want a unix socket, unix:///path", d.Socket))
		}
		if d.Container == "" {
			errs = append(errs, errors.New("runner.docker.container: the docker runner needs the peer's container name"))
		}
		if !strings.HasPrefix(d.ServicePath, "/") {
			errs = append(errs, fmt.Errorf("runner.docker.service_path %q: want the absolute path of ipfs-cluster-service in the images", d.ServicePath))
		}
	default:
		errs = append(errs, fmt.Errorf("runner.type %q: want exec, systemd or docker", c.Runner.Type))
	}
	if c.Runner.Type == RunnerSystemd && c.Runner.Unit == "" {
		errs = append(errs, errors.New("runner.unit: the systemd runner needs a unit name"))
	}
	for name, d := range map[string]time.Duration{"prepare": c.Timeouts.Prepare, "switch": c.Timeouts.Switch,
		"rollback": c.Timeouts.Rollback, "verify": c.Timeouts.Verify, "runner.stop_timeout": c.Runner.StopTimeout,
		"announcement_ttl": c.AnnouncementTTL} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be a positive duration", name))
		}
	}
	if c.Approvals < 1 {
		errs = append(errs, errors.New("approvals_required: must be at least 1"))
	}
	if c.Approvals > len(c.Trust) && len(c.Trust) > 0 {
		errs = append(errs, fmt.Errorf("approvals_required %d: only %d trusted signers are configured", c.Approvals, len(c.Trust)))
	}
	if c.ProposalTTL <= 0 {
		errs = append(errs, errors.New("proposal_ttl: must be a positive duration"))
	}
	if c.Timeouts.Barrier < 0 {
		errs = append(errs, errors.New("timeouts.barrier: must not be negative"))
	}
	if c.Backups.Interval < 0 {
		errs = append(errs, errors.New("backups.interval: must not be negative (0s turns scheduled backups off)"))
	}
	if c.Backups.Keep < 1 {
		errs = append(errs, fmt.Errorf("backups.keep %d: at least the newest backup must be kept", c.Backups.Keep))
	}
	if c.Raft.MaxVoters < 1 || c.Raft.MaxVoters%2 == 0 {
		errs = append(errs, fmt.Errorf("raft.max_voters %d: want an odd number of at least 1 (3 or 5), so that a majority is never a tie", c.Raft.MaxVoters))
	}
	if c.Raft.HeartbeatTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("raft.heartbeat_timeout %v: want at least 100ms", c.Raft.HeartbeatTimeout))
	}
	if c.Raft.VoterFailureTimeout < max(time.Second, c.Raft.HeartbeatTimeout) {
		errs = append(errs, fmt.Errorf("raft.voter_failure_timeout %v: want at least 1s and the raft heartbeat timeout", c.Raft.VoterFailureTimeout))
	}
	for _, w := range c.Windows {
		if _, err := plan.ParseWindow(w); err != nil {
			errs = append(errs, fmt.Errorf("maintenance_windows: %w", err))
		}
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			errs = append(errs, fmt.Errorf("metrics_address %q: want host:port: %w", c.MetricsAddress, err))
		}
	}
	if c.LogFormat != "console" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format %q: want console or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// Paths inside the config folder.
func (c *Config) IdentityFile() string { return filepath.Join(c.Dir, "identity.key") }
func (c *Config) RaftDir() string      { return filepath.Join(c.Dir, "raft") }
func (c *Config) BinDir() string       { return filepath.Join(c.Dir, "bin") }
func (c *Config) BackupDir() string    { return filepath.Join(c.Dir, "backups") }
func (c *Config) JournalDir() string   { return filepath.Join(c.Dir, "journal") }
func (c *Config) StagingDir() string   { return filepath.Join(c.Dir, "staging") }
func (c *Config) RunDir() string       { return filepath.Join(c.Dir, "run") }
func (c *Config) SocketPath() string   { return filepath.Join(c.Dir, "upgraded.sock") }
func (c *Config) LogDir() string       { return filepath.Join(c.Dir, "log") }

// HistoryFile is where this daemon keeps the record of every plan.
func (c *Config) HistoryFile() string { return filepath.Join(c.Dir, "history.jsonl") }

type jsonConfig struct {
	ClusterConfig   string       `json:"cluster_config"`
	Listen          []string     `json:"listen_multiaddress"`
	Bootstrap       []string     `json:"bootstrap"`
	Trust           []string     `json:"trusted_signers"`
	Connected       int          `json:"connected_daemons"`
	Approvals       int          `json:"approvals_required"`
	ProposalTTL     string       `json:"proposal_ttl"`
	Runner          jsonRunner   `json:"runner"`
	Timeouts        jsonTimeouts `json:"timeouts"`
	Backups         jsonBackups  `json:"backups"`
	Raft            jsonRaft     `json:"raft"`
	AnnouncementTTL string       `json:"announcement_ttl"`
	StopPeerOnExit  bool         `json:"stop_peer_on_exit"`
	LogFormat       string       `json:"log_format"`
	MetricsAddress  string       `json:"metrics_address"`
	Windows         []string     `json:"maintenance_windows"`
}

type jsonRunner struct {
	Type        string      `json:"type"`
	Unit        string      `json:"unit,omitempty"`
	StopTimeout string      `json:"stop_timeout"`
	Docker      *jsonDocker `json:"docker,omitempty"`
}

type jsonDocker struct {
	Socket      string `json:"socket,omitempty"`
	Container   string `json:"container,omitempty"`
	ServicePath string `json:"service_path,omitempty"`
}

type jsonBackups struct {
	Interval string `json:"interval"`
	Keep     int    `json:"keep"`
}

type jsonRaft struct {
	MaxVoters           int    `json:"max_voters"`
	VoterFailureTimeout string `json:"voter_failure_timeout"`
	HeartbeatTimeout    string `json:"heartbeat_timeout"`
}

type jsonTimeouts struct {
	Prepare  string `json:"prepare"`
	Switch   string `json:"switch"`
	Rollback string `json:"rollback"`
	Barrier  string `json:"barrier"`
	Verify   string `json:"verify"`
}

// ToJSON renders the configuration as upgraded.json.
func (c *Config) ToJSON() ([]byte, error) {
	j := jsonConfig{ClusterConfig: c.ClusterConfig, Listen: c.Listen, Bootstrap: nonNil(c.Bootstrap), Trust: nonNil(c.Trust),
		Runner: jsonRunner{Type: c.Runner.Type, Unit: c.Runner.Unit, StopTimeout: c.Runner.StopTimeout.String()},
		Timeouts: jsonTimeouts{Prepare: c.Timeouts.Prepare.String(), Switch: c.Timeouts.Switch.String(),
			Rollback: c.Timeouts.Rollback.String(), Barrier: c.Timeouts.Barrier.String(), Verify: c.Timeouts.Verify.String()},
		Backups: jsonBackups{Interval: c.Backups.Interval.String(), Keep: c.Backups.Keep},
		Raft: jsonRaft{MaxVoters: c.Raft.MaxVoters, VoterFailureTimeout: c.Raft.VoterFailureTimeout.String(),
			HeartbeatTimeout: c.Raft.HeartbeatTimeout.String()},
		Approvals: c.Approvals, ProposalTTL: c.ProposalTTL.String(), Connected: c.ConnectedDaemons,
		AnnouncementTTL: c.AnnouncementTTL.String(), MetricsAddress: c.MetricsAddress, Windows: nonNil(c.Windows), StopPeerOnExit: c.StopPeerOnExit, LogFormat: c.LogFormat}
	if c.Runner.Type == RunnerDocker {
		d := c.Runner.Docker
		j.Runner.Docker = &jsonDocker{Socket: d.Socket, Container: d.Container, ServicePath: d.ServicePath}
	}
	return json.MarshalIndent(j, "", "  ")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// LoadJSON reads upgraded.json content over the defaults: absent keys keep them.
func (c *Config) LoadJSON(b []byte) error {
	var j jsonConfig
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("decoding %s: %w", FileName, err)
	}
	c.ClusterConfig = j.ClusterConfig
	if len(j.Listen) > 0 {
		c.Listen = j.Listen
	}
	c.Bootstrap, c.Trust = j.Bootstrap, j.Trust
	if j.Approvals != 0 {
		c.Approvals = j.Approvals
	}
	if j.Connected != 0 {
		c.ConnectedDaemons = j.Connected
	}
	if j.Runner.Type != "" {
		c.Runner.Type = j.Runner.Type
	}
	if j.Runner.Unit != "" {
		c.Runner.Unit = j.Runner.Unit
	}
	if d := j.Runner.Docker; d != nil {
		for _, f := range []struct{ in, out *string }{{&d.Socket, &c.Runner.Docker.Socket},
			{&d.Container, &c.Runner.Docker.Container}, {&d.ServicePath, &c.Runner.Docker.ServicePath}} {
			if *f.in != "" {
				*f.out = *f.in
			}
		}
	}
	c.StopPeerOnExit = j.StopPeerOnExit
	c.MetricsAddress = j.MetricsAddress
	c.Windows = j.Windows
	if j.LogFormat != "" {
		c.LogFormat = j.LogFormat
	}
	if j.Backups.Keep != 0 {
		c.Backups.Keep = j.Backups.Keep
	}
	if j.Raft.MaxVoters != 0 {
		c.Raft.MaxVoters = j.Raft.MaxVoters
	}
	for _, d := range []struct {
		name string
		in   string
		out  *time.Duration
	}{
		{"runner.stop_timeout", j.Runner.StopTimeout, &c.Runner.StopTimeout},
		{"timeouts.prepare", j.Timeouts.Prepare, &c.Timeouts.Prepare},
		{"timeouts.switch", j.Timeouts.Switch, &c.Timeouts.Switch},
		{"timeouts.rollback", j.Timeouts.Rollback, &c.Timeouts.Rollback},
		{"timeouts.barrier", j.Timeouts.Barrier, &c.Timeouts.Barrier},
		{"timeouts.verify", j.Timeouts.Verify, &c.Timeouts.Verify},
		{"announcement_ttl", j.AnnouncementTTL, &c.AnnouncementTTL},
		{"proposal_ttl", j.ProposalTTL, &c.ProposalTTL},
		{"backups.interval", j.Backups.Interval, &c.Backups.Interval},
		{"raft.voter_failure_timeout", j.Raft.VoterFailureTimeout, &c.Raft.VoterFailureTimeout},
		{"raft.heartbeat_timeout", j.Raft.HeartbeatTimeout, &c.Raft.HeartbeatTimeout},
	} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil {
			return fmt.Errorf("%s %q: %w", d.name, d.in, err)
		}
		*d.out = v
	}
	return nil
}

// Load reads dir/upgraded.json, applies defaults and validates.
func Load(dir string) (*Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving config folder %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(abs, FileName))
	if err != nil {
		return nil, fmt.Errorf("reading configuration (run `upgraded init` first?): %w", err)
	}
	c := Default(abs)
	if err := c.LoadJSON(b); err != nil {
		return nil, err
	}
	if c.ClusterConfig != "" && !filepath.IsAbs(c.ClusterConfig) {
		c.ClusterConfig = filepath.Join(abs, c.ClusterConfig)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration in %s: %w", filepath.Join(abs, FileName), err)
	}
	return c, nil
}

// Save writes the configuration atomically to its folder.
func (c *Config) Save() error {
	b, err := c.ToJSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("creating config folder: %w", err)
	}
	tmp := filepath.Join(c.Dir, "."+FileName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(c.Dir, FileName)); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	return nil
}

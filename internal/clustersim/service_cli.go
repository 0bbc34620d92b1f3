package clustersim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// service is one invocation of ipfs-cluster-service.
type service struct {
	io      IO
	profile Profile
	fault   string
	dir     string
	force   bool
	log     *zap.Logger
}

// ServiceMain is main() of ipfs-cluster-service: it wires signals (a daemon
// stops cleanly on SIGINT/SIGTERM, unless the hang-stop fault makes it ignore
// them) and returns the exit code.
func ServiceMain(args []string, stdio IO) int {
	fault := Fault
	if v, ok := os.LookupEnv("CLUSTERSIM_FAULT"); ok {
		fault = v
	}
	var ctx context.Context
	var stop context.CancelFunc
	if fault == FaultHangStop {
		signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
		ctx, stop = context.WithCancel(context.Background())
	} else {
		ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	}
	defer stop()
	return RunService(ctx, args, stdio, ProfileFor(Version), fault)
}

var serviceGlobalFlags = []flagSpec{
	{Names: []string{"config", "c"}}, {Names: []string{"force", "f"}, Bool: true},
	{Names: []string{"debug", "d"}, Bool: true}, {Names: []string{"loglevel", "l"}},
	{Names: []string{"help", "h"}, Bool: true}, {Names: []string{"version", "v"}, Bool: true},
}

// RunService runs ipfs-cluster-service with args; ctx ends a daemon.
func RunService(ctx context.Context, args []string, stdio IO, p Profile, fault string) int {
	glob, rest := splitGlobal(args)
	g, _, err := parseFlags(glob, serviceGlobalFlags)
	if err != nil {
		fmt.Fprintln(stdio.Stderr, "Incorrect Usage.", err)
		return 1
	}
	s := &service{io: stdio, profile: p, fault: fault, dir: configDir(g["config"]), force: g["force"] == "true"}
	s.log = newLogger(stdio.Stderr, serviceLogLevel(g, os.Getenv))
	defer s.log.Sync() //nolint:errcheck // stderr
	switch {
	case g["version"] == "true":
		fmt.Fprintf(stdio.Stdout, "ipfs-cluster-service version %s\n", p.Version)
		return 0
	case g["help"] == "true" || len(rest) == 0:
		fmt.Fprint(stdio.Stdout, renderHelp(helpService, p))
		return 0
	}
	if err := s.run(ctx, rest[0], rest[1:]); err != nil {
		fmt.Fprintf(stdio.Stderr, "error: %s\n", err)
		return 1
	}
	return 0
}

// serviceLogLevel is the log level the global flags ask for: --debug, else
// --loglevel, else $IPFS_CLUSTER_LOG_LEVEL (the flag's environment variable,
// as the real help text says), else info.
func serviceLogLevel(g map[string]string, getenv func(string) string) string {
	if g["debug"] == "true" {
		return "debug"
	}
	if l := g["loglevel"]; l != "" {
		return l
	}
	return getenv("IPFS_CLUSTER_LOG_LEVEL")
}

// splitGlobal separates global flags (before the command) from the rest.
func splitGlobal(args []string) (glob, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return glob, args[i:]
		}
		glob = append(glob, a)
		name := strings.TrimLeft(a, "-")
		if (name == "config" || name == "c" || name == "loglevel" || name == "l") && i+1 < len(args) {
			i++
			glob = append(glob, args[i])
		}
	}
	return glob, nil
}

func configDir(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("IPFS_CLUSTER_PATH"); env != "" {
		return env
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".ipfs-cluster")
}

func hasHelp(args []string) bool {
	for _, a := range args {
		if a == "--help" || a == "-h" {
			return true
		}
	}
	return false
}

func (s *service) run(ctx context.Context, cmd string, args []string) error {
	help := map[string]string{"init": helpInit, "daemon": helpDaemon}
	if t, ok := help[cmd]; ok && hasHelp(args) {
		fmt.Fprint(s.io.Stdout, renderHelp(t, s.profile))
		return nil
	}
	switch cmd {
	case "init":
		return s.cmdInit(args)
	case "daemon":
		return s.cmdDaemon(ctx, args)
	case "state":
		return s.cmdState(args)
	case "version":
		fmt.Fprintf(s.io.Stdout, "ipfs-cluster-service version %s\n", s.profile.Version)
		return nil
	case "help", "h":
		return s.cmdHelp(args)
	}
	return fmt.Errorf("no such command %q", cmd)
}

func (s *service) cmdHelp(args []string) error {
	t := helpService
	switch strings.Join(args, " ") {
	case "init":
		t = helpInit
	case "daemon":
		t = helpDaemon
	case "state":
		t = helpState
	}
	fmt.Fprint(s.io.Stdout, renderHelp(t, s.profile))
	return nil
}

func (s *service) cmdInit(args []string) error {
	f, _, err := parseFlags(args, []flagSpec{
		{Names: []string{"consensus"}}, {Names: []string{"datastore"}}, {Names: []string{"peers"}},
		{Names: []string{"randomports"}, Bool: true}, {Names: []string{"force", "f"}, Bool: true},
		{Names: []string{"custom-secret", "s"}, Bool: true},
	})
	if err != nil {
		return err
	}
	consensus := f["consensus"]
	if consensus == "" {
		consensus = ConsensusCRDT
	}
	if consensus != ConsensusCRDT && consensus != ConsensusRaft {
		return fmt.Errorf("consensus component must be 'crdt' or 'raft', not %q", consensus)
	}
	cfgPath := filepath.Join(s.dir, "service.json")
	if exists(cfgPath) && !s.force && f["force"] != "true" &&
		!confirm(s.io, fmt.Sprintf("%s already exists. Overwrite it with a default configuration?", cfgPath)) {
		return errors.New("configuration not overwritten (use -f to force)")
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating config folder: %w", err)
	}
	id, err := s.identityForInit()
	if err != nil {
		return err
	}
	o, err := s.initOptions(consensus, f, id)
	if err != nil {
		return err
	}
	b, err := BuildServiceJSON(o)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(cfgPath, b); err != nil {
		return err
	}
	peerstore := strings.Join(o.Peers, "\n")
	if peerstore != "" {
		peerstore += "\n"
	}
	if err := writeFileAtomic(filepath.Join(s.dir, "peerstore"), []byte(peerstore)); err != nil {
		return err
	}
	fmt.Fprintf(s.io.Stdout, "configuration written to %s.\n", cfgPath)
	return nil
}

// identityForInit keeps an existing identity (like the real init) or makes one.
func (s *service) identityForInit() (Identity, error) {
	if id, err := LoadIdentity(s.dir); err == nil {
		return id, nil
	}
	id, err := NewIdentity()
	if err != nil {
		return id, err
	}
	b, _ := json.MarshalIndent(id, "", "    ")
	path := filepath.Join(s.dir, "identity.json")
	if err := writeFileAtomic(path, append(b, '\n')); err != nil {
		return id, err
	}
	fmt.Fprintf(s.io.Stdout, "new identity written to %s\n", path)
	return id, nil
}

func (s *service) initOptions(consensus string, f map[string]string, id Identity) (InitOptions, error) {
	secret := os.Getenv("CLUSTER_SECRET")
	if secret == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return InitOptions{}, fmt.Errorf("generating secret: %w", err)
		}
		secret = hex.EncodeToString(b)
	}
	name, _ := os.Hostname()
	o := InitOptions{Profile: s.profile, Consensus: consensus, Secret: secret, Ports: defaultPorts, Peername: name, SelfID: id.ID}
	if f["randomports"] == "true" {
		ports, err := freePorts(5)
		if err != nil {
			return o, err
		}
		o.Ports = Ports{API: ports[0], Proxy: ports[1], Cluster: ports[2], PinSvc: ports[3], IPFS: ports[4]}
	}
	for _, p := range strings.Split(f["peers"], ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if _, err := ParseAddr(p); err != nil {
			return o, fmt.Errorf("--peers: %w", err)
		}
		o.Peers = append(o.Peers, p)
	}
	return o, nil
}

// freePorts finds n distinct free TCP ports on 127.0.0.1. They are drawn
// below the kernel's ephemeral range (32768+), so that outgoing connections
// made between init and daemon start cannot take them.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n && tries < 1000; tries++ {
		port := 10000 + mrand.IntN(22000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, errors.New("finding free ports: none left below 32000")
	}
	return ports, nil
}

func writeFileAtomic(path string, b []byte) error {
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

func (s *service) cmdDaemon(ctx context.Context, args []string) error {
	f, _, err := parseFlags(args, []flagSpec{
		{Names: []string{"upgrade", "u"}, Bool: true}, {Names: []string{"bootstrap", "j"}},
		{Names: []string{"stats"}, Bool: true}, {Names: []string{"tracing"}, Bool: true},
		{Names: []string{"no-trust"}, Bool: true},
	})
	if err != nil {
		return err
	}
	var boot []string
	for _, b := range strings.Split(f["bootstrap"], ",") {
		if b = strings.TrimSpace(b); b != "" {
			boot = append(boot, b)
		}
	}
	return RunDaemon(ctx, DaemonOptions{
		Dir: s.dir, Profile: s.profile, Fault: s.fault, Bootstrap: boot, Upgrade: f["upgrade"] == "true",
		LoadDelay: envDuration("CLUSTERSIM_LOAD_DELAY", 300*time.Millisecond) + slowStart(),
		StopDelay: envDuration("CLUSTERSIM_STOP_DELAY", 100*time.Millisecond),
		Log:       s.log.Named("service"),
	})
}

func (s *service) cmdState(args []string) error {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" {
		fmt.Fprint(s.io.Stdout, renderHelp(helpState, s.profile))
		return nil
	}
	sub, rest := args[0], args[1:]
	help := map[string]string{"export": helpStateExport, "import": helpStateImport, "cleanup": helpStateCleanup}
	if t, ok := help[sub]; ok && hasHelp(rest) {
		fmt.Fprint(s.io.Stdout, renderHelp(t, s.profile))
		return nil
	}
	switch {
	case sub == "export":
		return s.stateExport(rest)
	case sub == "import":
		return s.stateImport(rest)
	case sub == "cleanup":
		return s.stateCleanup(rest)
	case sub == "upgrade" && s.profile.StateUpgrade:
		return s.stateUpgrade()
	case sub == "crdt" && s.profile.CRDTCommands:
		return s.stateCRDT(rest)
	}
	return fmt.Errorf("no such state command %q", sub)
}

// offline opens what a state command needs: the config, and no live daemon.
func (s *service) offline() (*ServiceConfig, error) {
	cfg, err := LoadServiceConfig(s.dir)
	if err != nil {
		return nil, err
	}
	if err := checkUnlocked(s.dir); err != nil {
		return nil, fmt.Errorf("%w: stop the peer first", err)
	}
	return cfg, nil
}

// readState reads the pinset as an offline command sees it: for raft, the
// newest snapshot only.
func (s *service) readState(cfg *ServiceConfig) ([]Entry, error) {
	if cfg.ConsensusName() == ConsensusRaft {
		_, entries, err := readNewestSnapshot(filepath.Join(s.dir, "raft"))
		return liveOf(reduce(entries)), err
	}
	store, ls, err := openCRDTStore(s.dir, s.profile, s.log.Named("service"))
	if err != nil {
		return nil, err
	}
	if err := store.Close(); err != nil {
		return nil, err
	}
	return liveOf(reduce(ls.Entries)), nil
}

func (s *service) stateExport(args []string) error {
	f, _, err := parseFlags(args, []flagSpec{{Names: []string{"file", "f"}}})
	if err != nil {
		return err
	}
	cfg, err := s.offline()
	if err != nil {
		return err
	}
	pins, err := s.readState(cfg)
	if err != nil {
		return fmt.Errorf("reading state: %w", err)
	}
	pins = visiblePins(pins, s.fault == FaultShortPinset)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, e := range pins {
		if err := enc.Encode(PinJSON(s.profile, e, false)); err != nil {
			return err
		}
	}
	if f["file"] != "" {
		err = writeFileAtomic(f["file"], buf.Bytes())
	} else {
		_, err = s.io.Stdout.Write(buf.Bytes())
	}
	if err != nil {
		return fmt.Errorf("writing export: %w", err)
	}
	s.log.Named("service").Info("state successfully exported")
	return nil
}

func (s *service) stateImport(args []string) error {
	f, pos, err := parseFlags(args, []flagSpec{
		{Names: []string{"force", "f"}, Bool: true}, {Names: []string{"replication-min", "rmin"}},
		{Names: []string{"replication-max", "rmax"}}, {Names: []string{"allocations", "allocs"}},
	})
	if err != nil {
		return err
	}
	cfg, err := s.offline()
	if err != nil {
		return err
	}
	var in io.Reader = s.io.Stdin
	if len(pos) > 0 {
		fh, err := os.Open(pos[0])
		if err != nil {
			return fmt.Errorf("opening import file: %w", err)
		}
		defer fh.Close()
		in = fh
	}
	entries, err := readImport(in)
	if err != nil {
		return err
	}
	if !s.force && f["force"] != "true" && !confirm(s.io, "The current state will be replaced by the imported one. Continue?") {
		return errors.New("import aborted")
	}
	id, err := LoadIdentity(s.dir)
	if err != nil {
		return err
	}
	// Imported pins are stamped with the wall clock so they win over any
	// older history still held by other peers.
	clock := uint64(time.Now().UnixNano())
	for i := range entries {
		entries[i].Clock, entries[i].Origin, entries[i].Seq = clock, id.ID, uint64(i+1)
	}
	if cfg.ConsensusName() == ConsensusRaft {
		err = importRaftState(filepath.Join(s.dir, "raft"), entries, s.log.Named("raft"))
	} else {
		err = s.importCRDT(entries)
	}
	if err != nil {
		return fmt.Errorf("importing state: %w", err)
	}
	s.log.Named("service").Info(fmt.Sprintf("state successfully imported (%d pins)", len(entries)))
	return nil
}

func (s *service) importCRDT(entries []Entry) error {
	dir := filepath.Join(s.dir, s.profile.DatastoreDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing old datastore: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating datastore: %w", err)
	}
	return writeFileSnapshot(dir, loadedState{Epoch: newEpoch(), Entries: entries})
}

// readImport reads newline-delimited pin objects (or one JSON array).
func readImport(r io.Reader) ([]Entry, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading import: %w", err)
	}
	b = bytes.TrimSpace(b)
	var lines [][]byte
	if bytes.HasPrefix(b, []byte("[")) {
		var arr []json.RawMessage
		if err := json.Unmarshal(b, &arr); err != nil {
			return nil, fmt.Errorf("decoding import: %w", err)
		}
		for _, a := range arr {
			lines = append(lines, a)
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
				lines = append(lines, append([]byte(nil), l...))
			}
		}
	}
	out := make([]Entry, 0, len(lines))
	for i, l := range lines {
		e, err := ParsePinJSON(l)
		if err != nil {
			return nil, fmt.Errorf("import line %d: %w", i+1, err)
		}
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *service) stateCleanup(args []string) error {
	f, _, err := parseFlags(args, []flagSpec{{Names: []string{"force", "f"}, Bool: true}})
	if err != nil {
		return err
	}
	cfg, err := s.offline()
	if err != nil {
		return err
	}
	if !s.force && f["force"] != "true" &&
		!confirm(s.io, "This will remove all the persisted consensus data (pinset). Continue?") {
		return errors.New("cleanup aborted")
	}
	if cfg.ConsensusName() == ConsensusRaft {
		moved, err := rotateRaftFolder(s.dir, cfg.Consensus.Raft.BackupsRotate)
		if err != nil {
			return err
		}
		if moved != "" {
			s.log.Named("raft").Info("raft state moved aside: " + moved)
		}
		return nil
	}
	if err := os.RemoveAll(filepath.Join(s.dir, s.profile.DatastoreDir)); err != nil {
		return fmt.Errorf("removing datastore: %w", err)
	}
	s.log.Named("service").Info("crdt datastore removed: " + s.profile.DatastoreDir)
	return nil
}

func (s *service) stateUpgrade() error {
	if _, err := s.offline(); err != nil {
		return err
	}
	s.log.Named("service").Info("state is already at the current format: nothing to upgrade")
	return nil
}

func (s *service) stateCRDT(args []string) error {
	cfg, err := s.offline()
	if err != nil {
		return err
	}
	if cfg.ConsensusName() != ConsensusCRDT {
		return errors.New("crdt commands need crdt consensus")
	}
	if len(args) > 0 && args[0] == "info" {
		pins, err := s.readState(cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(s.io.Stdout, "Number of heads: 1. Current max-height: %d. Dirty: false\n", len(pins))
	}
	return nil
}

// renderHelp fills a help template for a release.
func renderHelp(t string, p Profile) string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	url, stateDesc, first := "https://github.com/ipfs-cluster/ipfs-cluster.", "Manages the peer's persistent state (pinset)", "a first"
	initFlags := "   --consensus value    select consensus: 'crdt' or 'raft' (default: \"crdt\")\n" +
		"   --datastore value    select datastore: 'badger', 'badger3', 'leveldb' or 'pebble' (default: \"pebble\")\n"
	stateCmds := "   crdt     CRDT-state commands\n"
	if p.LegacyJSON {
		url, stateDesc, first = "https://github.com/ipfs/ipfs-cluster.", "Manages the peer's consensus state (pinset)", "the first"
		initFlags = "   --consensus value    select consensus component: 'crdt' or 'raft' (default: \"crdt\")\n" +
			"   --datastore value    select datastore component: 'badger' or 'leveldb' (default: \"badger\")\n"
		stateCmds = ""
	}
	upgrade := "run state migrations before starting (deprecated/unused)"
	if p.StateUpgrade {
		stateCmds = "   upgrade  upgrade the IPFS Cluster state to the current version\n"
		upgrade = "run necessary state migrations before starting"
	}
	return strings.NewReplacer(
		"{{VERSION}}", p.Version, "{{URL}}", url, "{{STATEDESC}}", stateDesc,
		"{{HOME}}", filepath.Join(home, ".ipfs-cluster"), "{{INITFLAGS}}", initFlags,
		"{{FIRSTSTART}}", first, "{{UPGRADEDESC}}", upgrade, "{{STATECMDS}}", stateCmds,
	).Replace(t)
}

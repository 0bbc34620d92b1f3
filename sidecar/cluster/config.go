// Package cluster drives the IPFS Cluster peer on this host: its REST API,
// its `ipfs-cluster-service` binary and its config folder. Every release's
// form (0.14.5, 1.0.x, 1.1.x) is read tolerantly: unknown fields are ignored
// and missing ones take the release defaults.
package cluster

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Defaults of ipfs-cluster-service used when service.json leaves a field out.
const (
	DefaultAPIAddr       = "/ip4/127.0.0.1/tcp/9094"
	DefaultListenAddr    = "/ip4/0.0.0.0/tcp/9096"
	DefaultBackupsRotate = 6
	// DefaultDatastore is what 1.x `init` picks; 0.14.5 picked badger, but
	// it always wrote its choice into service.json.
	DefaultDatastore = "pebble"
)

// Consensus names as they appear in service.json.
const (
	ConsensusRaft = "raft"
	ConsensusCRDT = "crdt"
)

// datastoreNames lists the crdt datastores the releases know, in the order a
// guess prefers them when nothing else tells which one holds the state.
func datastoreNames() []string { return []string{"pebble", "badger3", "badger", "leveldb"} }

// ServiceConfig is what upgraded needs from a peer's config folder.
type ServiceConfig struct {
	Dir       string // the config folder it was read from
	Secret    []byte // decoded from cluster.secret (64 hex chars)
	PeerName  string // cluster.peername
	Consensus string // "raft" or "crdt", from which consensus section is present
	Datastore string // folder holding crdt state: pebble, badger, badger3, leveldb ("" for raft)
	APIAddr   string // api.restapi.http_listen_multiaddress
	// APICredentials are api.restapi.basic_auth_credentials (user ->
	// password), nil when the API is open; pass one to WithBasicAuth.
	APICredentials map[string]string
	ListenAddrs    []string // cluster.listen_multiaddress (string or array in the file)
	PeerAddresses  []string // cluster.peer_addresses
	InitPeerset    []string // consensus.raft.init_peerset
	BackupsRotate  int      // consensus.raft.backups_rotate, default 6

	stateFolder string // relative folder of the state, set by the loader
}

// serviceJSON is the private twin of service.json: only the fields upgraded
// reads, each one optional.
type serviceJSON struct {
	Cluster struct {
		PeerName           string          `json:"peername"`
		Secret             string          `json:"secret"`
		ListenMultiaddress json.RawMessage `json:"listen_multiaddress"`
		PeerAddresses      []string        `json:"peer_addresses"`
	} `json:"cluster"`
	Consensus struct {
		Raft *raftJSON       `json:"raft"`
		CRDT json.RawMessage `json:"crdt"`
	} `json:"consensus"`
	API struct {
		RestAPI struct {
			HTTPListenMultiaddress json.RawMessage   `json:"http_listen_multiaddress"`
			BasicAuthCredentials   map[string]string `json:"basic_auth_credentials"`
		} `json:"restapi"`
	} `json:"api"`
	Datastore map[string]json.RawMessage `json:"datastore"`
}

type raftJSON struct {
	InitPeerset   []string `json:"init_peerset"`
	BackupsRotate int      `json:"backups_rotate"`
	DataFolder    string   `json:"data_folder"`
}

// folderJSON reads the optional custom folder of a datastore section.
type folderJSON struct {
	Folder string `json:"folder"`
}

// LoadServiceConfig reads dir/service.json.
func LoadServiceConfig(dir string) (*ServiceConfig, error) {
	path := filepath.Join(dir, "service.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cluster config: %w", err)
	}
	cfg, err := parseServiceConfig(data, dir)
	if err != nil {
		return nil, fmt.Errorf("reading cluster config %s: %w", path, err)
	}
	return cfg, nil
}

func parseServiceConfig(data []byte, dir string) (*ServiceConfig, error) {
	var raw serviceJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("decoding JSON: %w", err)
	}
	secret, err := decodeSecret(raw.Cluster.Secret)
	if err != nil {
		return nil, err
	}
	cfg := &ServiceConfig{
		Dir:            dir,
		Secret:         secret,
		PeerName:       raw.Cluster.PeerName,
		PeerAddresses:  raw.Cluster.PeerAddresses,
		BackupsRotate:  DefaultBackupsRotate,
		APICredentials: raw.API.RestAPI.BasicAuthCredentials,
	}
	if cfg.ListenAddrs, err = stringOrList(raw.Cluster.ListenMultiaddress, DefaultListenAddr); err != nil {
		return nil, fmt.Errorf("cluster.listen_multiaddress: %w", err)
	}
	apiAddrs, err := stringOrList(raw.API.RestAPI.HTTPListenMultiaddress, DefaultAPIAddr)
	if err != nil {
		return nil, fmt.Errorf("api.restapi.http_listen_multiaddress: %w", err)
	}
	// The client needs one address; the first is the one the peer's own
	// ctl would use.
	cfg.APIAddr = apiAddrs[0]
	if err := cfg.setConsensus(&raw, dir); err != nil {
		return nil, err
	}
	return cfg, nil
}

func decodeSecret(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("cluster.secret is missing: upgraded needs it to join the private network")
	}
	secret, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(secret) != 32 {
		// The value is a secret: never quote it.
		return nil, errors.New("cluster.secret is not 64 hexadecimal characters")
	}
	return secret, nil
}

// stringOrList accepts a multiaddr written as one string or as an array, as
// the releases did at different times.
func stringOrList(raw json.RawMessage, def string) ([]string, error) {
	if isNull(raw) {
		return []string{def}, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return []string{def}, nil
		}
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errors.New("neither a string nor a list of strings")
	}
	var out []string
	for _, a := range list {
		if a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return []string{def}, nil
	}
	return out, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

func (c *ServiceConfig) setConsensus(raw *serviceJSON, dir string) error {
	hasRaft, hasCRDT := raw.Consensus.Raft != nil, !isNull(raw.Consensus.CRDT)
	switch {
	case hasRaft && hasCRDT:
		return errors.New("service.json has both a raft and a crdt consensus section; the peer itself refuses that")
	case hasRaft:
		r := raw.Consensus.Raft
		c.Consensus = ConsensusRaft
		c.InitPeerset = r.InitPeerset
		if r.BackupsRotate > 0 { // the peer rejects <= 0, so it never ran with one
			c.BackupsRotate = r.BackupsRotate
		}
		folder, err := plainFolder(r.DataFolder, "raft", "consensus.raft.data_folder")
		c.stateFolder = folder
		return err
	case hasCRDT:
		c.Consensus = ConsensusCRDT
		return c.setDatastore(raw.Datastore, dir)
	default:
		return errors.New("service.json has no consensus section (raft or crdt)")
	}
}

// setDatastore picks the crdt datastore. service.json names it; when it does
// not (or names several), the folder found on disk decides, because backing
// up the wrong folder would lose the pinset silently.
func (c *ServiceConfig) setDatastore(sections map[string]json.RawMessage, dir string) error {
	var named []string
	for _, name := range datastoreNames() {
		if _, ok := sections[name]; ok {
			named = append(named, name)
		}
	}
	switch {
	case len(named) == 1:
		c.Datastore = named[0]
	case len(named) == 0:
		c.Datastore = firstExisting(dir, datastoreNames(), DefaultDatastore)
	default:
		onDisk := existing(dir, named)
		if len(onDisk) != 1 {
			return fmt.Errorf("service.json configures several datastores (%s) and %d of their folders exist: cannot tell which holds the state",
				strings.Join(named, ", "), len(onDisk))
		}
		c.Datastore = onDisk[0]
	}
	var custom folderJSON
	if sec, ok := sections[c.Datastore]; ok && !isNull(sec) {
		_ = json.Unmarshal(sec, &custom) // a malformed section leaves the default folder
	}
	folder, err := plainFolder(custom.Folder, c.Datastore, "datastore."+c.Datastore+".folder")
	c.stateFolder = folder
	return err
}

// plainFolder accepts a custom state folder only when it is a plain name
// inside the config folder: upgraded copies and removes state folders, and
// must never be pointed elsewhere by a config file.
func plainFolder(custom, def, field string) (string, error) {
	if custom == "" {
		return def, nil
	}
	if custom == "." || custom == ".." || strings.ContainsAny(custom, `/\`) || filepath.IsAbs(custom) {
		return def, fmt.Errorf("%s is %q: only a plain folder name inside the config folder is supported", field, custom)
	}
	return custom, nil
}

func existing(dir string, names []string) []string {
	var out []string
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join(dir, n)); err == nil && fi.IsDir() {
			out = append(out, n)
		}
	}
	return out
}

func firstExisting(dir string, names []string, def string) string {
	if found := existing(dir, names); len(found) > 0 {
		return found[0]
	}
	return def
}

// StateFolders names the folders, relative to the config folder, that hold
// this peer's consensus state: "raft" for raft, the datastore's folder for crdt.
func (c *ServiceConfig) StateFolders() []string {
	if c.stateFolder != "" {
		return []string{c.stateFolder}
	}
	if c.Consensus == ConsensusRaft {
		return []string{"raft"}
	}
	if c.Datastore != "" {
		return []string{c.Datastore}
	}
	return nil
}

// LoadPeerID reads the peer's ID from dir/identity.json.
func LoadPeerID(dir string) (string, error) {
	path := filepath.Join(dir, "identity.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading cluster peer identity: %w", err)
	}
	var ident struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &ident); err != nil {
		return "", fmt.Errorf("decoding cluster peer identity %s: %w", path, err)
	}
	if ident.ID == "" {
		return "", fmt.Errorf("cluster peer identity %s has no id", path)
	}
	return ident.ID, nil
}

package clustersim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Consensus names.
const (
	ConsensusCRDT = "crdt"
	ConsensusRaft = "raft"
)

// ServiceConfig is the part of service.json the simulator reads. Unknown
// fields are kept in the file untouched: it is only read, never rewritten,
// after init.
type ServiceConfig struct {
	Cluster struct {
		Peername           string   `json:"peername"`
		Secret             string   `json:"secret"`
		ListenMultiaddress []string `json:"listen_multiaddress"`
		PeerAddresses      []string `json:"peer_addresses"`
	} `json:"cluster"`
	Consensus struct {
		Raft *RaftConfig     `json:"raft,omitempty"`
		CRDT json.RawMessage `json:"crdt,omitempty"`
	} `json:"consensus"`
	API struct {
		RestAPI struct {
			HTTPListenMultiaddress string `json:"http_listen_multiaddress"`
		} `json:"restapi"`
	} `json:"api"`
	IPFSConnector struct {
		IPFSHTTP struct {
			NodeMultiaddress string `json:"node_multiaddress"`
		} `json:"ipfshttp"`
	} `json:"ipfs_connector"`
}

// RaftConfig is consensus.raft as far as the simulator uses it.
type RaftConfig struct {
	InitPeerset       []string `json:"init_peerset"`
	BackupsRotate     int      `json:"backups_rotate"`
	SnapshotThreshold int      `json:"snapshot_threshold"`
}

// ConsensusName says which consensus the config selects.
func (c *ServiceConfig) ConsensusName() string {
	if c.Consensus.Raft != nil {
		return ConsensusRaft
	}
	return ConsensusCRDT
}

// LoadServiceConfig reads dir/service.json.
func LoadServiceConfig(dir string) (*ServiceConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, "service.json"))
	if err != nil {
		return nil, fmt.Errorf("reading service.json: %w", err)
	}
	var c ServiceConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parsing service.json: %w", err)
	}
	if c.Consensus.Raft == nil && c.Consensus.CRDT == nil {
		return nil, fmt.Errorf("service.json: no consensus component configured")
	}
	if len(c.Cluster.ListenMultiaddress) == 0 {
		return nil, fmt.Errorf("service.json: cluster.listen_multiaddress is empty")
	}
	if c.Consensus.Raft != nil {
		if c.Consensus.Raft.BackupsRotate <= 0 {
			c.Consensus.Raft.BackupsRotate = 6
		}
		if c.Consensus.Raft.SnapshotThreshold <= 0 {
			c.Consensus.Raft.SnapshotThreshold = 8192
		}
	}
	return &c, nil
}

// Ports are the four listeners a peer has.
type Ports struct{ API, Proxy, Cluster, PinSvc, IPFS int }

// DefaultPorts are those of real releases.
var defaultPorts = Ports{API: 9094, Proxy: 9095, Cluster: 9096, PinSvc: 9097, IPFS: 5001}

// InitOptions shape a generated service.json.
type InitOptions struct {
	Profile   Profile
	Consensus string
	Secret    string
	Ports     Ports
	Peername  string
	// Peers are full /p2p multiaddrs from --peers: they become peer_addresses
	// and, for raft, init_peerset (with the own ID).
	Peers  []string
	SelfID string
}

func ma(port int) string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port) }

// BuildServiceJSON renders a service.json shaped like the release's own.
func BuildServiceJSON(o InitOptions) ([]byte, error) {
	root := obj{
		{"cluster", clusterSection(o)},
		{"consensus", consensusSection(o)},
		{"api", apiSection(o)},
		{"ipfs_connector", obj{{"ipfshttp", obj{
			{"node_multiaddress", ma(o.Ports.IPFS)},
			{"connect_swarms_delay", "30s"},
			{"ipfs_request_timeout", "5m0s"},
			{"pin_timeout", "2m0s"},
			{"unpin_timeout", "3h0m0s"},
			{"repogc_timeout", "24h0m0s"},
			{"informer_trigger_interval", 0},
		}}}},
		{"pin_tracker", obj{{"stateless", obj{
			{"concurrent_pins", 10},
			{"priority_pin_max_age", "24h0m0s"},
			{"priority_pin_max_retries", 5},
		}}}},
		{"monitor", obj{{"pubsubmon", obj{{"check_interval", "15s"}}}}},
		{"allocator", obj{{"balanced", obj{{"allocate_by", []string{"tag:group", "freespace"}}}}}},
		{"informer", informerSection(o)},
		{"observations", observationsSection(o)},
	}
	if o.Consensus == ConsensusCRDT {
		root = append(root, kv{"datastore", datastoreSection(o)})
	}
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("rendering service.json: %w", err)
	}
	return append(b, '\n'), nil
}

func clusterSection(o InitOptions) obj {
	peers := o.Peers
	if peers == nil {
		peers = []string{}
	}
	c := obj{
		{"peername", o.Peername},
		{"secret", o.Secret},
		{"leave_on_shutdown", false},
		{"listen_multiaddress", []string{ma(o.Ports.Cluster)}},
	}
	modern := !o.Profile.LegacyJSON
	switch {
	case modern && o.Profile.Before11:
		c = append(c, kv{"announce_multiaddress", nil}, kv{"no_announce_multiaddress", nil})
	case modern:
		c = append(c, kv{"announce_multiaddress", []string{}}, kv{"no_announce_multiaddress", []string{}})
	}
	c = append(c, kv{"enable_relay_hop", true},
		kv{"connection_manager", obj{{"high_water", 400}, {"low_water", 100}, {"grace_period", "2m0s"}}})
	if modern && !o.Profile.Before11 {
		c = append(c,
			kv{"resource_manager", obj{{"enabled", true}, {"memory_limit_bytes", 0}, {"file_descriptors_limit", 0}}},
			kv{"pubsub", obj{{"seen_messages_ttl", "30m0s"}, {"heartbeat_interval", "10s"}, {"d_factor", 4},
				{"history_gossip", 2}, {"history_length", 6}, {"flood_publish", false}}})
	}
	c = append(c,
		kv{"dial_peer_timeout", "3s"}, kv{"state_sync_interval", "5m0s"}, kv{"pin_recover_interval", "12m0s"},
		kv{"replication_factor_min", -1}, kv{"replication_factor_max", -1}, kv{"monitor_ping_interval", "15s"},
		kv{"peer_watch_interval", "5s"}, kv{"mdns_interval", "0s"})
	if modern {
		c = append(c, kv{"pin_only_on_trusted_peers", false}, kv{"pin_only_on_untrusted_peers", false})
	}
	return append(c, kv{"disable_repinning", true}, kv{"peer_addresses", peers})
}

func consensusSection(o InitOptions) obj {
	if o.Consensus == ConsensusRaft {
		initPeers := []string{}
		if len(o.Peers) > 0 {
			initPeers = append(initPeers, o.SelfID)
			for _, p := range o.Peers {
				if a, err := ParseAddr(p); err == nil && a.PeerID != "" {
					initPeers = append(initPeers, a.PeerID)
				}
			}
		}
		return obj{{"raft", obj{
			{"init_peerset", initPeers},
			{"wait_for_leader_timeout", "15s"}, {"network_timeout", "10s"},
			{"commit_retries", 1}, {"commit_retry_delay", "200ms"},
			{"backups_rotate", 6}, {"heartbeat_timeout", "1s"}, {"election_timeout", "1s"},
			{"commit_timeout", "50ms"}, {"max_append_entries", 64}, {"trailing_logs", 10240},
			{"snapshot_interval", "2m0s"}, {"snapshot_threshold", 8192}, {"leader_lease_timeout", "500ms"},
		}}}
	}
	return obj{{"crdt", obj{
		{"cluster_name", "ipfs-cluster"},
		{"trusted_peers", []string{"*"}},
		{"batching", obj{{"max_batch_size", 0}, {"max_batch_age", "0s"}}},
		{"repair_interval", "1h0m0s"},
	}}}
}

func httpAPISection(port int, idle string) obj {
	return obj{
		{"http_listen_multiaddress", ma(port)},
		{"read_timeout", "0s"}, {"read_header_timeout", "5s"}, {"write_timeout", "0s"},
		{"idle_timeout", idle}, {"max_header_bytes", 4096},
		{"basic_auth_credentials", nil}, {"http_log_file", ""}, {"headers", obj{}},
		{"cors_allowed_origins", []string{"*"}}, {"cors_allowed_methods", []string{"GET"}},
		{"cors_allowed_headers", []string{}},
		{"cors_exposed_headers", []string{"Content-Type", "X-Stream-Output", "X-Chunked-Output", "X-Content-Length"}},
		{"cors_allow_credentials", true}, {"cors_max_age", "0s"},
	}
}

func apiSection(o InitOptions) obj {
	a := obj{{"ipfsproxy", obj{
		{"listen_multiaddress", ma(o.Ports.Proxy)},
		{"node_multiaddress", ma(5001)},
		{"log_file", ""}, {"read_timeout", "0s"}, {"read_header_timeout", "5s"},
		{"write_timeout", "0s"}, {"idle_timeout", "1m0s"}, {"max_header_bytes", 4096},
	}}}
	if o.Profile.PinSvcAPI {
		a = append(a, kv{"pinsvcapi", httpAPISection(o.Ports.PinSvc, "2m0s")})
	}
	return append(a, kv{"restapi", httpAPISection(o.Ports.API, "2m0s")})
}

func informerSection(o InitOptions) obj {
	inf := obj{{"disk", obj{{"metric_ttl", "30s"}, {"metric_type", "freespace"}}}}
	if !o.Profile.LegacyJSON {
		inf = append(inf, kv{"pinqueue", obj{{"metric_ttl", "30s"}, {"weight_bucket_size", 100000}}})
	}
	return append(inf, kv{"tags", obj{{"metric_ttl", "30s"}, {"tags", obj{{"group", "default"}}}}})
}

func observationsSection(o InitOptions) obj {
	interval := "30s"
	if o.Profile.Before11 {
		interval = "2s"
	}
	return obj{
		{"metrics", obj{{"enable_stats", false}, {"prometheus_endpoint", "/ip4/127.0.0.1/tcp/8888"}, {"reporting_interval", interval}}},
		{"tracing", obj{{"enable_tracing", false}, {"jaeger_agent_endpoint", "/ip4/0.0.0.0/udp/6831"},
			{"sampling_prob", 0.3}, {"service_name", "cluster-daemon"}}},
	}
}

func datastoreSection(o InitOptions) obj {
	if o.Profile.DatastoreDir == "badger" {
		return obj{{"badger", obj{
			{"gc_discard_ratio", 0.2}, {"gc_interval", "15m0s"}, {"gc_sleep", "10s"},
			{"badger_options", obj{
				{"dir", ""}, {"value_dir", ""}, {"sync_writes", true}, {"table_loading_mode", 2},
				{"value_log_loading_mode", 0}, {"num_versions_to_keep", 1}, {"max_table_size", 16777216},
				{"level_size_multiplier", 10}, {"max_levels", 7}, {"value_threshold", 32},
				{"num_memtables", 5}, {"num_level_zero_tables", 5}, {"num_level_zero_tables_stall", 10},
				{"level_one_size", 268435456}, {"value_log_file_size", 1073741823},
				{"value_log_max_entries", 1000000}, {"num_compactors", 2},
				{"compact_l_0_on_close", false}, {"read_only", false}, {"truncate", true},
			}},
		}}}
	}
	compression, format := 1, 24
	if o.Profile.Before11 {
		compression, format = 2, 16
	}
	levels := make([]obj, 0, 7)
	for i := 0; i < 7; i++ {
		levels = append(levels, obj{
			{"block_restart_interval", 16}, {"block_size", 4096}, {"block_size_threshold", 90},
			{"compression", compression}, {"filter_type", 0}, {"filter_policy", 10},
			{"index_block_size", 4096}, {"target_file_size", 4194304 << i},
		})
	}
	opts := obj{
		{"cache_size_bytes", 1073741824}, {"bytes_per_sync", 1048576}, {"disable_wal", false},
		{"flush_delay_delete_range", 0}, {"flush_delay_range_key", 0}, {"flush_split_bytes", 4194304},
		{"format_major_version", format}, {"l0_compaction_file_threshold", 750}, {"l0_compaction_threshold", 4},
		{"l0_stop_writes_threshold", 12}, {"l_base_max_bytes", 134217728}, {"max_open_files", 1000},
		{"mem_table_size", 67108864}, {"mem_table_stop_writes_threshold", 20}, {"read_only", false},
		{"wal_bytes_per_sync", 0}, {"levels", levels},
	}
	if o.Profile.Before11 {
		opts = append(opts, kv{"max_concurrent_compactions", 5})
	}
	return obj{{"pebble", obj{{"pebble_options", opts}}}}
}

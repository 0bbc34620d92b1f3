// Package clustersim is a look-alike of IPFS Cluster's ipfs-cluster-service
// and ipfs-cluster-ctl. It reproduces the surface an upgrade driver uses (REST
// API, CLI, config folder, state folders) and the behaviours that bite an
// upgrader (see shared/reference/ipfs-cluster.md), so that whole clusters of
// real processes can run on 127.0.0.1 in tests and demos. Peers talk plain
// HTTP to each other on their cluster listen port instead of libp2p,
// authenticated by the cluster secret.
package clustersim

import (
	"strconv"
	"strings"
)

// Version and Fault are set at build time with -ldflags -X. They are the only
// package-level variables and are never written at run time: the binary's
// identity, like the real release's version string.
var (
	// Version is the IPFS Cluster release this binary pretends to be.
	Version = "1.1.6"
	// Fault is a misbehaviour baked into the binary: "", "fail-start",
	// "short-pinset" or "hang-stop". $CLUSTERSIM_FAULT overrides it.
	Fault = ""
)

// Faults understood by the simulator.
const (
	FaultFailStart   = "fail-start"
	FaultShortPinset = "short-pinset"
	FaultHangStop    = "hang-stop"
)

// Profile is what a release does differently from another.
type Profile struct {
	Version     string
	RPCProtocol string
	// LegacyJSON: cid as {"/": ...}, type as a number, lists as one JSON array.
	LegacyJSON bool
	// DatastoreDir is the crdt datastore folder: "badger" before 1.0, "pebble" after.
	DatastoreDir string
	PinSvcAPI    bool
	// StateUpgrade: `state upgrade` exists and `daemon --upgrade` means something.
	StateUpgrade bool
	// CRDTCommands: `state crdt ...` exists.
	CRDTCommands bool
	// Before11: 1.0.x config has no resource_manager/pubsub sections and
	// older pebble options.
	Before11 bool
}

// ProfileFor derives the behaviour of release v.
func ProfileFor(v string) Profile {
	p := Profile{Version: v}
	modern := CompareVersions(v, "1.0.0") >= 0
	if modern {
		p.RPCProtocol = "/ipfscluster/1.0/rpc"
		p.DatastoreDir = "pebble"
		p.PinSvcAPI = true
		p.CRDTCommands = true
	} else {
		p.RPCProtocol = "/ipfscluster/0.12/rpc"
		if CompareVersions(v, "0.12.0") < 0 {
			p.RPCProtocol = "/ipfscluster/0.11/rpc"
		}
		p.LegacyJSON = true
		p.DatastoreDir = "badger"
	}
	p.StateUpgrade = CompareVersions(v, "0.12.0") < 0
	p.Before11 = CompareVersions(v, "1.1.0") < 0
	return p
}

// CompareVersions compares two dotted versions ("1.1.6", "v0.14.5"),
// numerically per part; missing parts count as 0 and any pre-release suffix
// ("-rc1") is ignored. It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := 0; i < 3; i++ {
		switch {
		case pa[i] < pb[i]:
			return -1
		case pa[i] > pb[i]:
			return 1
		}
	}
	return 0
}

func versionParts(v string) [3]int {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	var out [3]int
	for i, s := range strings.SplitN(v, ".", 3) {
		n, err := strconv.Atoi(s)
		if err == nil {
			out[i] = n
		}
	}
	return out
}

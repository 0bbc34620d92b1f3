package clustersim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// apiError is the real API's error body.
func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, obj{{"code", code}, {"message", msg}})
}

func (d *daemon) restHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /id", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(d.selfIDJSON(), '\n'))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, obj{{"version", d.opts.Profile.Version}})
	})
	mux.HandleFunc("GET /peers", d.handlePeers)
	mux.HandleFunc("DELETE /peers/{id}", d.handlePeerRm)
	mux.HandleFunc("GET /allocations", d.handleAllocations)
	mux.HandleFunc("GET /allocations/{cid}", d.handleAllocation)
	mux.HandleFunc("GET /pins", d.handleStatus)
	mux.HandleFunc("POST /pins/{cid}", d.handlePin)
	mux.HandleFunc("DELETE /pins/{cid}", d.handleUnpin)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Origin")
		mux.ServeHTTP(w, r)
	})
}

// visible is the pinset as the API shows it: empty until loaded, short
// with the short-pinset fault.
func (d *daemon) visible() []Entry {
	if !d.loaded.Load() {
		return nil
	}
	return visiblePins(d.state.live(), d.opts.Fault == FaultShortPinset)
}

// stream writes a list the release's way: 1.x streams newline-delimited
// objects with an X-Stream-Error trailer; 0.x answers one JSON array.
func (d *daemon) stream(w http.ResponseWriter, items []any) {
	if d.opts.Profile.LegacyJSON {
		if items == nil {
			items = []any{}
		}
		writeJSON(w, http.StatusOK, items)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Trailer", "X-Stream-Error")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return
		}
	}
	w.Header().Set("X-Stream-Error", "")
}

func (d *daemon) handleAllocations(w http.ResponseWriter, r *http.Request) {
	pins := d.visible()
	items := make([]any, 0, len(pins))
	for _, e := range pins {
		items = append(items, PinJSON(d.opts.Profile, e, false))
	}
	d.stream(w, items)
}

func (d *daemon) handleAllocation(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("cid")
	for _, e := range d.visible() {
		if e.CID == c {
			writeJSON(w, http.StatusOK, PinJSON(d.opts.Profile, e, false))
			return
		}
	}
	apiError(w, http.StatusNotFound, "cid is not part of the global state")
}

// handleStatus is a minimal GET /pins: with no IPFS daemon behind the peer,
// every item is in error, as with the real release in the same situation.
func (d *daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	pins := d.visible()
	items := make([]any, 0, len(pins))
	for _, e := range pins {
		p := PinJSON(d.opts.Profile, e, false)
		ts := e.Time.UTC().Format(time.RFC3339)
		items = append(items, obj{
			{"cid", p[10].V}, {"name", e.Name}, {"allocations", []string{}}, {"origins", []string{}},
			{"created", ts}, {"metadata", nil},
			{"peer_map", map[string]obj{d.id.ID: {
				{"peername", d.cfg.Cluster.Peername}, {"ipfs_peer_id", ""}, {"ipfs_peer_addresses", nil},
				{"status", "pin_error"}, {"timestamp", ts}, {"error", d.ipfsError()},
				{"attempt_count", 0}, {"priority_pin", false},
			}}},
		})
	}
	d.stream(w, items)
}

func (d *daemon) handlePin(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("cid")
	if err := ValidateCID(d.opts.Profile, c); err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !d.writable(w, r) {
		return
	}
	e := Entry{CID: c, Name: r.URL.Query().Get("name"), Time: time.Now().UTC()}
	e, err := d.state.stampLocal(e, d.id.ID)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.push(r.Context(), []Entry{e}, nil, d.pushTargets())
	d.log.Info("new pin added", zap.String("cid", c))
	writeJSON(w, http.StatusOK, PinJSON(d.opts.Profile, e, true))
}

func (d *daemon) handleUnpin(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("cid")
	if err := ValidateCID(d.opts.Profile, c); err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !d.writable(w, r) {
		return
	}
	old, ok := d.state.get(c)
	if !ok {
		apiError(w, http.StatusNotFound, "cid is not part of the global state")
		return
	}
	e := old
	e.Deleted, e.Time = true, time.Now().UTC()
	e, err := d.state.stampLocal(e, d.id.ID)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.push(r.Context(), []Entry{e}, nil, d.pushTargets())
	d.log.Info("pin removed", zap.String("cid", c))
	writeJSON(w, http.StatusOK, PinJSON(d.opts.Profile, old, false))
}

// writable: a raft write waits for a leader, up to wait_for_leader_timeout
// (15s), as the real consensus does, then fails.
func (d *daemon) writable(w http.ResponseWriter, r *http.Request) bool {
	if d.consensus != ConsensusRaft {
		return true
	}
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-d.ready:
		return true
	case <-r.Context().Done():
	case <-t.C:
	}
	apiError(w, http.StatusInternalServerError, "error waiting for leader: timed out waiting for leader")
	return false
}

func (d *daemon) handlePeerRm(w http.ResponseWriter, r *http.Request) {
	pid := r.PathValue("id")
	if d.consensus == ConsensusCRDT {
		apiError(w, http.StatusInternalServerError, "crdt consensus component cannot remove peers")
		return
	}
	if !d.writable(w, r) {
		return
	}
	old := d.state.getMembership()
	if _, ok := old.Peers[pid]; !ok {
		apiError(w, http.StatusNotFound, fmt.Sprintf("peer %s is not part of the raft peerset", pid))
		return
	}
	peers := old.clone().Peers
	delete(peers, pid)
	m, err := d.state.setMembership(peers, d.id.ID)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.log.Named("raft").Info("peer removed from the raft peerset", zap.String("peer", pid))
	// The removed peer hears of it too and, as measured, keeps running.
	d.push(r.Context(), nil, &m, memberAddrs(old))
	w.WriteHeader(http.StatusNoContent)
}

func (d *daemon) ipfsError() string {
	a, err := ParseAddr(d.cfg.IPFSConnector.IPFSHTTP.NodeMultiaddress)
	if err != nil {
		return "ipfs node multiaddress invalid"
	}
	return fmt.Sprintf("Post \"http://%s/api/v0/id\": dial tcp %s: connect: connection refused", a.HostPort(), a.HostPort())
}

// clusterPeers lists the peer IDs this peer counts in its cluster: the raft
// membership, or on crdt the peers GET /peers lists. The real peer takes both
// /id's cluster_peers and /peers from its consensus's peer list (crdt: the
// peers whose monitoring metrics it holds), so on crdt the two agree, lag
// and protocol split included.
func (d *daemon) clusterPeers() []string {
	if d.consensus == ConsensusRaft {
		return d.state.getMembership().IDs()
	}
	ids := []string{d.id.ID}
	for _, c := range d.seenPeers(time.Now()) {
		ids = append(ids, c.id)
	}
	sort.Strings(ids)
	return ids
}

// seenPeers are the other peers GET /peers lists: of this peer's own RPC
// protocol only, crdt after a lag of contact, raft the reachable members.
func (d *daemon) seenPeers(now time.Time) []contact {
	members := d.state.getMembership()
	var out []contact
	for _, c := range d.peers.alive(now, d.consensus == ConsensusCRDT) {
		if c.rpc != d.opts.Profile.RPCProtocol || c.info == nil {
			continue
		}
		if _, ok := members.Peers[c.id]; d.consensus == ConsensusRaft && !ok {
			continue
		}
		out = append(out, c)
	}
	return out
}

func (d *daemon) selfIDJSON() json.RawMessage {
	peers := d.clusterPeers()
	addrs := []string{}
	for _, pid := range peers {
		if pid == d.id.ID {
			continue
		}
		if a, ok := d.peers.addrOf(pid); ok {
			addrs = append(addrs, a.WithPeer(pid))
		} else if ma := d.state.getMembership().Peers[pid]; ma != "" {
			addrs = append(addrs, ma)
		}
	}
	b, _ := json.Marshal(obj{
		{"id", d.id.ID},
		{"addresses", []string{d.listen.WithPeer(d.id.ID)}},
		{"cluster_peers", peers},
		{"cluster_peers_addresses", addrs},
		{"version", d.opts.Profile.Version},
		{"commit", ""},
		{"rpc_protocol_version", d.opts.Profile.RPCProtocol},
		{"error", ""},
		{"ipfs", obj{{"addresses", nil}, {"error", d.ipfsError()}}},
		{"peername", d.cfg.Cluster.Peername},
	})
	return b
}

// handlePeers lists this peer and those it sees, of its own RPC protocol
// only: crdt after a lag of contact, raft the reachable members at once.
func (d *daemon) handlePeers(w http.ResponseWriter, r *http.Request) {
	items := []any{json.RawMessage(d.selfIDJSON())}
	for _, c := range d.seenPeers(time.Now()) {
		items = append(items, c.info)
	}
	d.stream(w, items)
}

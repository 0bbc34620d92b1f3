package clustersim

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The peer-to-peer protocol: plain HTTP on the cluster listen port instead of
// libp2p. Every request carries the cluster secret; a peer with another
// secret is refused (401), like a libp2p private network would.
const (
	headerSecret = "X-Cluster-Secret"
	headerPeer   = "X-Cluster-Peer"
	headerAddr   = "X-Cluster-Addr"
	syncPageSize = 5000
	syncInterval = 250 * time.Millisecond
)

type syncResponse struct {
	ID         string          `json:"id"`
	RPC        string          `json:"rpc_protocol_version"`
	Info       json.RawMessage `json:"info,omitempty"`
	Epoch      string          `json:"epoch"`
	Last       uint64          `json:"last"`
	More       bool            `json:"more"`
	Entries    []Entry         `json:"entries"`
	Membership *Membership     `json:"membership,omitempty"`
	Known      []string        `json:"known,omitempty"`
	// InfoTag and KnownTag name the content of Info and Known. A peer that
	// already holds that content sends the tags back and gets the answer
	// without it: an idle sync answer is then a few hundred bytes, which is
	// what lets 100 simulated peers idle on one small machine.
	InfoTag  string `json:"info_tag,omitempty"`
	KnownTag string `json:"known_tag,omitempty"`
}

type applyRequest struct {
	From       string      `json:"from"`
	Entries    []Entry     `json:"entries"`
	Membership *Membership `json:"membership,omitempty"`
}

type joinRequest struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func (d *daemon) clusterHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_sim/sync", d.handleSync)
	mux.HandleFunc("POST /_sim/apply", d.handleApply)
	mux.HandleFunc("POST /_sim/join", d.handleJoin)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(headerSecret)
		if subtle.ConstantTimeCompare([]byte(got), []byte(d.cfg.Cluster.Secret)) != 1 {
			http.Error(w, "private network: wrong cluster secret", http.StatusUnauthorized)
			return
		}
		if a := r.Header.Get(headerAddr); a != "" && d.consensus == ConsensusCRDT {
			d.peers.learn(a)
		}
		mux.ServeHTTP(w, r)
	})
}

// refuseNonMember: a raft peer only talks state with members of its peerset.
func (d *daemon) refuseNonMember(w http.ResponseWriter, from string) bool {
	if d.consensus != ConsensusRaft {
		return false
	}
	m := d.state.getMembership()
	if _, ok := m.Peers[from]; ok || len(m.Peers) == 0 {
		return false
	}
	http.Error(w, "not a member of this raft peerset", http.StatusForbidden)
	return true
}

func (d *daemon) handleSync(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(headerPeer, d.id.ID)
	w.Header().Set("X-Cluster-RPC", d.opts.Profile.RPCProtocol)
	if d.refuseNonMember(w, r.Header.Get(headerPeer)) {
		return
	}
	q := r.URL.Query()
	since, _ := strconv.ParseUint(q.Get("since"), 10, 64)
	epoch, entries, last, more := d.state.pull(q.Get("epoch"), since, q.Get("digest"), syncPageSize)
	adv := d.advert()
	resp := syncResponse{
		ID: d.id.ID, RPC: d.opts.Profile.RPCProtocol, Epoch: epoch, Last: last, More: more,
		Entries: entries, InfoTag: adv.infoTag, KnownTag: adv.knownTag,
	}
	if q.Get("info_tag") != adv.infoTag {
		resp.Info = adv.info
	}
	if q.Get("known_tag") != adv.knownTag {
		resp.Known = adv.known
	}
	if d.consensus == ConsensusRaft {
		m := d.state.getMembership()
		resp.Membership = &m
	}
	writeJSON(w, http.StatusOK, resp)
}

func (d *daemon) handleApply(w http.ResponseWriter, r *http.Request) {
	var req applyRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if d.refuseNonMember(w, req.From) {
		return
	}
	if _, _, err := d.state.merge(req.Entries, req.Membership); err != nil {
		d.log.Error("applying changes from a peer", zap.String("peer", req.From), zap.Error(err))
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleJoin adds a bootstrapping raft peer to the membership.
func (d *daemon) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ID == "" {
		http.Error(w, "bad join request", http.StatusBadRequest)
		return
	}
	if d.consensus != ConsensusRaft {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !d.loaded.Load() {
		http.Error(w, "no raft leader yet", http.StatusServiceUnavailable)
		return
	}
	old := d.state.getMembership()
	if _, ok := old.Peers[req.ID]; !ok || old.Peers[req.ID] != req.Addr {
		peers := old.clone().Peers
		peers[req.ID] = req.Addr
		m, err := d.state.setMembership(peers, d.id.ID)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		d.log.Named("raft").Info("peer added to the raft peerset", zap.String("peer", req.ID))
		d.peers.learn(req.Addr)
		d.push(r.Context(), nil, &m, memberAddrs(m, old))
		old = m
	}
	writeJSON(w, http.StatusOK, old)
}

func memberAddrs(ms ...Membership) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for id, a := range m.Peers {
			if a != "" {
				out[id] = a
			}
		}
	}
	return out
}

// pushTargets lists where a local change should go at once.
func (d *daemon) pushTargets() map[string]string {
	if d.consensus == ConsensusRaft {
		return memberAddrs(d.state.getMembership())
	}
	out := map[string]string{}
	for _, a := range d.peers.all() {
		out[a.HostPort()] = a.Multiaddr()
	}
	return out
}

// push sends a change to targets (id -> multiaddr) concurrently and waits,
// best effort: anyone missed catches up through the sync loop.
func (d *daemon) push(ctx context.Context, entries []Entry, m *Membership, targets map[string]string) {
	body, err := json.Marshal(applyRequest{From: d.id.ID, Entries: entries, Membership: m})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for id, ma := range targets {
		if id == d.id.ID {
			continue
		}
		a, err := ParseAddr(ma)
		if err != nil || a.HostPort() == d.clusterAddr {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := d.peerRequest(ctx, http.MethodPost, a, "/_sim/apply", body)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

func (d *daemon) peerRequest(ctx context.Context, method string, a Addr, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a.HostPort()+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(headerSecret, d.cfg.Cluster.Secret)
	req.Header.Set(headerPeer, d.id.ID)
	req.Header.Set(headerAddr, d.listen.WithPeer(d.id.ID))
	return d.client.Do(req)
}

// syncLoop pulls changes from the peers it should follow, forever: all of
// them each tick, or a rotating syncFanout of them in a large cluster, which
// ticks less often while nothing changes (see nextPause).
func (d *daemon) syncLoop(ctx context.Context) {
	pause, quiet := syncInterval, 0
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		// In parallel, like a libp2p host's streams: a peer that is shutting
		// down and answers nothing holds up only its own sync, not the
		// rotation through the others (at 50 peers restarting together, one
		// such peer per tick stalled every peer's view for seconds).
		var wg sync.WaitGroup
		var news atomic.Bool
		targets := d.syncTargets()
		for _, a := range d.peers.due(targets, time.Now()) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if d.syncWith(ctx, a) {
					news.Store(true)
				}
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, q := nextPause(pause, quiet, news.Load(), len(targets))
		if p != pause {
			d.log.Debug("peer sync pace changed", zap.Duration("pause", p), zap.Bool("news", news.Load()))
		}
		pause, quiet = p, q
		t.Reset(pause)
	}
}

func (d *daemon) syncTargets() []Addr {
	if d.consensus == ConsensusCRDT {
		return d.peers.all()
	}
	var out []Addr
	for id, ma := range d.state.getMembership().Peers {
		if id == d.id.ID {
			continue
		}
		if a, err := ParseAddr(ma); err == nil {
			d.peers.learn(ma)
			out = append(out, a)
		} else if a, ok := d.peers.addrOf(id); ok {
			out = append(out, a)
		}
	}
	return out
}

// syncWith pulls pages of changes from one peer until caught up, and says
// whether anything was news: a change, a peer new, back, lost or changed.
func (d *daemon) syncWith(ctx context.Context, a Addr) (news bool) {
	if a.HostPort() == d.clusterAddr {
		return false
	}
	for page := 0; page < 1000 && ctx.Err() == nil; page++ {
		more, pageNews, err := d.syncPage(ctx, a)
		news = news || pageNews
		if err != nil {
			d.log.Debug("peer sync failed", zap.String("addr", a.Multiaddr()), zap.Error(err))
			return d.peers.failed(a.HostPort()) || news
		}
		if !more {
			return news
		}
	}
	return news
}

func (d *daemon) syncPage(ctx context.Context, a Addr) (more, news bool, err error) {
	cur := d.peers.cursor(a.HostPort())
	q := url.Values{"epoch": {cur.epoch}, "since": {strconv.FormatUint(cur.last, 10)}, "digest": {d.state.digestString()}}
	if cur.infoTag != "" {
		q.Set("info_tag", cur.infoTag)
	}
	if cur.knownTag != "" {
		q.Set("known_tag", cur.knownTag)
	} else {
		// Nothing heard from it yet (a restart): if it knows the same
		// addresses as this peer, its list is not needed.
		q.Set("known_tag", d.advert().knownTag)
	}
	resp, err := d.peerRequest(ctx, http.MethodGet, a, "/_sim/sync?"+q.Encode(), nil)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	now := time.Now()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden:
		// A raft peer that does not count us as a member still answers.
		news = d.peers.seen(a.HostPort(), resp.Header.Get(headerPeer), resp.Header.Get("X-Cluster-RPC"), nil, now)
		return false, news, nil
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return false, false, fmt.Errorf("peer answered %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var sr syncResponse
	if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil {
		return false, false, fmt.Errorf("decoding sync answer: %w", err)
	}
	news = d.peers.seen(a.HostPort(), sr.ID, sr.RPC, sr.Info, now)
	if d.consensus == ConsensusCRDT {
		for _, k := range sr.Known {
			news = d.peers.learn(k) || news
		}
	} else {
		sr.Membership = d.acceptedMembership(sr.Membership)
	}
	changed, membership, err := d.state.merge(sr.Entries, sr.Membership)
	if err != nil {
		return false, news, err
	}
	d.peers.setCursor(a.HostPort(), syncCursor{epoch: sr.Epoch, last: sr.Last, infoTag: sr.InfoTag, knownTag: sr.KnownTag})
	return sr.More, news || changed > 0 || membership, nil
}

// acceptedMembership: a bootstrapping raft peer waits for its join answer.
func (d *daemon) acceptedMembership(m *Membership) *Membership {
	if m == nil || len(d.state.getMembership().Peers) == 0 {
		return nil
	}
	return m
}

// joinLoop asks the bootstrap peers to add this raft peer, until one does.
func (d *daemon) joinLoop(ctx context.Context) {
	body, _ := json.Marshal(joinRequest{ID: d.id.ID, Addr: d.listen.WithPeer(d.id.ID)})
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		for _, ma := range d.opts.Bootstrap {
			if d.tryJoin(ctx, ma, body) {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *daemon) tryJoin(ctx context.Context, ma string, body []byte) bool {
	a, err := ParseAddr(ma)
	if err != nil {
		d.log.Error("invalid bootstrap address", zap.String("addr", ma), zap.Error(err))
		return false
	}
	resp, err := d.peerRequest(ctx, http.MethodPost, a, "/_sim/join", body)
	if err != nil {
		d.log.Warn("bootstrap peer not reachable yet", zap.String("addr", ma), zap.Error(err))
		return false
	}
	defer resp.Body.Close()
	var m Membership
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&m) != nil {
		d.log.Warn("bootstrap peer did not add us yet", zap.String("addr", ma), zap.String("status", resp.Status))
		return false
	}
	if _, _, err := d.state.merge(nil, &m); err != nil {
		d.log.Error("recording the joined peerset", zap.Error(err))
		return false
	}
	for _, pma := range m.Peers {
		d.peers.learn(pma)
	}
	d.log.Info("joined the raft peerset", zap.String("via", ma), zap.Int("peers", len(m.Peers)))
	return true
}

// advert is what a sync answer tells of this peer beside the changes: its
// /id object and the addresses it knows, with their tags.
type advert struct {
	at                time.Time
	info              json.RawMessage
	known             []string
	infoTag, knownTag string
}

// advertTTL is how long an advert is reused. Every peer asks every other
// several times a second; building the /id object each time was most of an
// idle 50-peer cluster's CPU, and at a tenth of a second it still was 13%
// of the peers' CPU. One sync interval is far below the one second of
// contact a crdt peer needs before it is listed.
const advertTTL = syncInterval

func (d *daemon) advert() *advert {
	d.advMu.Lock()
	defer d.advMu.Unlock()
	now := time.Now()
	if d.adv != nil && now.Sub(d.adv.at) < advertTTL {
		return d.adv
	}
	a := &advert{at: now, info: d.selfIDJSON(), known: []string{d.listen.WithPeer(d.id.ID)}}
	for _, k := range d.peers.all() {
		if k.PeerID != "" {
			a.known = append(a.known, k.WithPeer(k.PeerID))
		}
	}
	// Self included and sorted, so that two peers knowing the same cluster
	// have the same list and tag (see syncPage).
	sort.Strings(a.known)
	a.infoTag, a.knownTag = contentTag(a.info), contentTag([]byte(strings.Join(a.known, " ")))
	d.adv = a
	return a
}

// contentTag names a sync answer's part by its content (FNV-1a, 64 bits).
// An empty part has no tag, so it is always sent.
func contentTag(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	h := fnv.New64a()
	_, _ = h.Write(b)
	return strconv.FormatUint(h.Sum64(), 36)
}

package p2p

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// peersTopic carries each daemon's own listen addresses. Daemons usually know
// only a bootstrap peer or two; raft must reach every member by peer ID and
// a gossipsub mesh is healthier with more links, so each daemon tells the
// others where it listens; every daemon records all of them and keeps a
// bounded set connected (see keeper).
// Gossipsub signs messages, so a daemon can only speak for itself.
const peersTopic = "/upgraded/peers/1.0.0"

type advertisement struct {
	Addrs []string `json:"addrs"`
}

func (n *Node) startAdvertising(ctx context.Context) error {
	t, err := n.Topic(peersTopic, n.validateAdvertisement)
	if err != nil {
		return fmt.Errorf("joining the peer address topic: %w", err)
	}
	n.Host.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) { n.AdvertiseSoon() }})
	n.goRun(func() { n.advertise(ctx, t, n.advertSoon) })
	n.goRun(func() { n.learn(ctx, t) })
	return nil
}

// AdvertiseSoon asks for an advertisement of this node's addresses, as a new
// connection does: advertSettle from now, or a base interval after the last
// one. A daemon that has heard from no raft leader for a while calls it: the
// leader may have no address to reach it by (its advertisements lost under
// load, say), and waits for one.
func (n *Node) AdvertiseSoon() {
	select {
	case n.advertSoon <- struct{}{}:
	default:
	}
}

// KnowDaemon tells the node of a daemon it may not have heard advertise,
// with the addresses the daemon registered: the keeper keeps it connected
// like an advertised one. Advertisements are gossip, lost under load, and a
// daemon whose gossip with its only peer failed hears none at all: in the
// N=100 benchmark 17 daemons stayed connected to their bootstrap daemon
// alone, minutes after all had registered.
func (n *Node) KnowDaemon(ai peer.AddrInfo) { n.keep.know(ai) }

// advertSettle is how long after a new connection the node advertises, to
// give the new peer's gossipsub a moment to see our subscription.
const advertSettle = 200 * time.Millisecond

// advertise publishes this node's addresses on the schedule of advertSchedule.
func (n *Node) advertise(ctx context.Context, t *Topic, newPeer <-chan struct{}) {
	s := newAdvertSchedule(time.Now(), n.cfg.AdvertiseInterval)
	s.jitter = spreadGap
	timer := time.NewTimer(time.Until(s.next))
	defer timer.Stop()
	for {
		wait := time.Duration(0)
		select {
		case <-ctx.Done():
			return
		case <-newPeer:
			s.connected(time.Now())
		case now := <-timer.C:
			if now.Before(s.next) {
				break
			}
			if s.skipPeriodic(n.cfg.OnRecord) {
				// As if it had gone: should the addresses leave the record
				// (they changed, say), advertising resumes at the interval
				// reached.
				s.schedule(now)
				break
			}
			if s.holdPeriodic(now, n.cfg.Quiet) {
				wait = quietRecheck
				break
			}
			addrs := make([]string, 0)
			for _, a := range n.Host.Addrs() {
				addrs = append(addrs, a.String())
			}
			b, _ := json.Marshal(advertisement{Addrs: addrs})
			if err := t.Publish(ctx, b); err != nil {
				if ctx.Err() == nil {
					n.log.Debug("advertising addresses", zap.Error(err))
				}
			} else {
				n.advertised.Add(1)
			}
			s.published(time.Now())
		}
		if wait == 0 {
			wait = time.Until(s.next)
		}
		timer.Reset(wait)
	}
}

// Holding periodic advertisements while Config.Quiet says so: checked again
// every quietRecheck, for at most maxQuietHold past their time.
const (
	quietRecheck = time.Second
	maxQuietHold = 30 * time.Second
)

// advertSchedule decides when a node next advertises its addresses.
//
// A new connection calls for an advertisement soon: a daemon that just
// joined learns the others' addresses from them. But each node advertises at
// most once per base interval: every advertisement goes to every daemon,
// which checks its signature, and when 100 daemons start together each sees
// ~100 new connections; one advertisement for each was 100^3 signature
// checks, minutes of the whole machine. Without new connections the interval
// doubles up to 16 times base (10s to 160s by default): addresses rarely
// change, and at 10s an idle 50-daemon cluster spent ~8% of every daemon's
// CPU on checking them.
type advertSchedule struct {
	base, max time.Duration
	gap       time.Duration // the next periodic interval
	last      time.Time     // the last advertisement, zero before the first
	next      time.Time     // when the next one is due
	// jitter, when set, varies each periodic interval (see spreadGap).
	jitter func(time.Duration) time.Duration
	// asked: the next advertisement answers a new connection or
	// AdvertiseSoon, not the periodic interval.
	asked bool
}

// spreadGap varies a periodic interval by up to a fifth either way. Daemons
// started together (a cluster's hosts rebooted, a test) otherwise advertise
// together at every doubling, 10, 20, 40, 80, 160 s after their start: at N=50
// each such moment was 2500 signature checks within a second, and one of
// them fell on the switch, in the middle of every peer's restart.
func spreadGap(d time.Duration) time.Duration {
	return d*4/5 + rand.N(d*2/5+1)
}

func newAdvertSchedule(now time.Time, base time.Duration) *advertSchedule {
	return &advertSchedule{base: base, max: 16 * base, gap: base, next: now.Add(base)}
}

// connected moves the next advertisement to advertSettle from now, or to a
// base interval after the last one if that is later, and restarts the
// doubling of the periodic interval.
func (s *advertSchedule) connected(now time.Time) {
	s.gap = s.base
	at := now.Add(advertSettle)
	if !s.last.IsZero() && at.Before(s.last.Add(s.base)) {
		at = s.last.Add(s.base)
	}
	if at.Before(s.next) {
		s.next = at
	}
	s.asked = true // whichever comes next answers it
}

// holdPeriodic tells whether the advertisement due at now waits: a periodic
// one does while quiet says so, up to maxQuietHold past its time. One asked
// for never waits: a new daemon, or one no leader hears from, needs it.
//
// The daemon is quiet while its plan switches: every daemon checks every
// advertisement's signature, and advertisements that fell in the outage of
// an N=50 switch (daemons started a minute before advertise every 10-40 s)
// made gossipsub a third of the daemons' CPU in it, CPU the restarting peers
// beside them waited for.
func (s *advertSchedule) holdPeriodic(now time.Time, quiet func() bool) bool {
	return !s.asked && quiet != nil && now.Sub(s.next) < maxQuietHold && quiet()
}

// skipPeriodic tells whether the advertisement now due is skipped: a
// periodic one is while onRecord says the node's addresses are on record.
// One asked for always goes.
//
// Every advertisement goes to every daemon, several times over (flood
// publishing, then the mesh's forwarding and gossip), and each checks its
// signature: N^2 deliveries per round of N advertisements. A daemon whose
// addresses are in the plan state gets nothing from them that the state
// does not give every other daemon every 10s. In the N=50 benchmark, two
// minutes after the daemons started, they advertised about twice a second
// in all, and each daemon received 10-50 messages a second (two in three
// of them copies) and as many gossip notices: 0.41-0.49 of the machine's 2
// cores went to 50 idle daemons, 0.22-0.23 once they skipped these.
func (s *advertSchedule) skipPeriodic(onRecord func() bool) bool {
	return !s.asked && onRecord != nil && onRecord()
}

// published records an advertisement at now and schedules the next one.
func (s *advertSchedule) published(now time.Time) {
	s.last = now
	s.schedule(now)
}

// schedule sets the next periodic advertisement, one interval after now,
// and doubles the interval up to its maximum.
func (s *advertSchedule) schedule(now time.Time) {
	s.asked = false
	gap := s.gap
	if s.jitter != nil {
		gap = s.jitter(gap)
	}
	s.next = now.Add(gap)
	s.gap = min(2*s.gap, s.max)
}

// learn records every advertising daemon for the keeper.
func (n *Node) learn(ctx context.Context, t *Topic) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-t.Messages():
			if !ok {
				return
			}
			if m.From == n.ID() {
				continue
			}
			ai, err := decodeAdvertisement(m.From, m.Data)
			if err != nil {
				continue
			}
			n.keep.add(ai, false)
		}
	}
}

func (n *Node) validateAdvertisement(_ context.Context, from peer.ID, data []byte) pubsub.ValidationResult {
	if _, err := decodeAdvertisement(from, data); err != nil {
		n.log.Debug("refusing peer address advertisement", zap.Stringer("from", from), zap.Error(err))
		return pubsub.ValidationReject
	}
	return pubsub.ValidationAccept
}

func decodeAdvertisement(from peer.ID, data []byte) (peer.AddrInfo, error) {
	var a advertisement
	if err := json.Unmarshal(data, &a); err != nil {
		return peer.AddrInfo{}, fmt.Errorf("decoding addresses: %w", err)
	}
	if len(a.Addrs) == 0 || len(a.Addrs) > 64 {
		return peer.AddrInfo{}, fmt.Errorf("%d addresses advertised", len(a.Addrs))
	}
	ai := peer.AddrInfo{ID: from}
	for _, s := range a.Addrs {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return peer.AddrInfo{}, fmt.Errorf("parsing address %q: %w", s, err)
		}
		ai.Addrs = append(ai.Addrs, ma)
	}
	return ai, nil
}

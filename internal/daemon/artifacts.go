package daemon

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/upgraded/upgraded/coordination/artifacts"
	"github.com/upgraded/upgraded/coordination/plan"
)

// shareArtifacts serves the artifacts this daemon staged to the other
// daemons and returns the fetcher the agent uses, so that per artifact one
// host fetches from the source and the others from their peers. Only
// daemons of this cluster are served (as for recovery requests).
func (d *Daemon) shareArtifacts() (*artifacts.Sharer, error) {
	store := artifacts.NewStore()
	srv, err := artifacts.Serve(artifacts.ServerConfig{Host: d.node.Host, Store: store, Allow: d.mayFetchArtifacts,
		Observer: d.metrics, Log: d.log})
	if err != nil {
		return nil, fmt.Errorf("serving artifacts to the other daemons: %w", err)
	}
	d.artifacts = srv
	sharer, err := artifacts.New(artifacts.Config{Host: d.node.Host, Store: store, Observer: d.metrics, Log: d.log})
	if err != nil {
		return nil, fmt.Errorf("sharing artifacts among the daemons: %w", err)
	}
	return sharer, nil
}

func (d *Daemon) stopArtifacts() {
	if d.artifacts != nil {
		d.artifacts.Close()
	}
}

// mayFetchArtifacts is isClusterDaemon without copying the plan state for
// the common case, a registered host: peers ask every few hundred milliseconds.
func (d *Daemon) mayFetchArtifacts(p peer.ID) bool {
	known := false
	d.fsm.View(func(s *plan.State) { _, known = s.Hosts[p.String()] })
	return known || d.isClusterDaemon(p)
}

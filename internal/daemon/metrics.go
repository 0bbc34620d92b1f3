package daemon

import (
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/statebackup"
)

// metricsSource shows the daemon to internal/metrics.
type metricsSource struct{ d *Daemon }

func (m metricsSource) State() *plan.State { return m.d.fsm.State() }

func (m metricsSource) Leader() string {
	if l, ok := m.d.raft.Leader(); ok {
		return l.String()
	}
	return ""
}

func (m metricsSource) Members() int {
	ms, err := m.d.raft.Members()
	if err != nil {
		return 0
	}
	return len(ms)
}

func (m metricsSource) Voters() int {
	ms, err := m.d.raft.Membership()
	if err != nil {
		return 0
	}
	n := 0
	for _, x := range ms {
		if x.Voter {
			n++
		}
	}
	return n
}

func (m metricsSource) Backups() ([]*statebackup.Manifest, error) {
	store, err := statebackup.Open(m.d.cfg.BackupDir(), m.d.log)
	if err != nil {
		return nil, err
	}
	return store.List()
}

package coordination

import (
	"fmt"
	"sort"
	"strings"

	"github.com/upgraded/upgraded/coordination/plan"
)

// DryRun is what the cluster would do with an announcement, without doing it.
type DryRun struct {
	Plan      string          `json:"plan"`
	Version   string          `json:"version"`
	Procedure plan.Procedure  `json:"procedure"`
	Choice    string          `json:"choice"` // which procedure will be carried out, or how it will be chosen
	Signer    string          `json:"signer"`
	Hosts     []DryRunHost    `json:"hosts"`
	Order     []string        `json:"order"` // hosts in the order they are upgraded (rolling) or removed (bootstrap)
	Steps     []string        `json:"steps"`
	Checks    []string        `json:"checks"`
	Artifacts []plan.Artifact `json:"artifacts"`
	Approvals string          `json:"approvals"`
	Refusal   string          `json:"refusal,omitempty"` // why the cluster would refuse it now
}

// DryRunHost is one host as the plan would take it.
type DryRunHost struct {
	Host        string `json:"host"`
	Name        string `json:"name,omitempty"`
	ClusterPeer string `json:"cluster_peer"`
	Version     string `json:"version"`
	Consensus   string `json:"consensus"`
}

// DryRun checks a signed announcement like Announce and says what would
// happen, publishing nothing.
func (c *Coordinator) DryRun(data []byte) (*DryRun, error) {
	now := c.cfg.Clock()
	a, signer, err := c.openAnnouncement(data, now)
	if err != nil {
		return nil, err
	}
	d := &DryRun{Plan: a.ID, Version: a.Version, Procedure: a.Procedure, Signer: signer.String(), Artifacts: a.Artifacts}
	c.cfg.FSM.View(func(s *plan.State) {
		if err := s.CheckAnnouncement(a, now); err != nil {
			d.Refusal = err.Error()
		}
		consensus := map[string]bool{}
		for _, h := range s.Hosts {
			d.Hosts = append(d.Hosts, DryRunHost{Host: h.ID, Name: h.Name, ClusterPeer: h.ClusterPeer, Version: h.Version, Consensus: h.Consensus})
			consensus[h.Consensus] = true
		}
		sort.Slice(d.Hosts, func(i, j int) bool { return d.Hosts[i].Host < d.Hosts[j].Host })
		for _, h := range d.Hosts {
			d.Order = append(d.Order, h.Host)
		}
		policy, _ := s.ClusterPolicy()
		d.Approvals = fmt.Sprintf("%d of %d trusted keys must sign; the announcement counts as the signer's", max(policy.Threshold, 1), len(policy.Trusted))
		d.Choice, d.Steps = describeProcedure(a, consensus["raft"], len(d.Hosts))
	})
	d.Checks = checksOf(a)
	return d, nil
}

func describeProcedure(a *plan.Announcement, raft bool, n int) (string, []string) {
	prepare := "every host, nothing stopped: fetch each artifact, check its sha256, unpack, check that the staged ipfs-cluster-service --version prints " + a.Version + ", take a live backup of the pinset and verify it"
	standard := []string{prepare,
		"at one moment on every host: stop the peer, take the offline state export (compared with the live backup, never trusted when short) and copies of the state folders, switch bin/current to " + a.Version + ", run the state migration the new binary supports, start it",
		"verify every host; any failure or silence past the deadline: roll every host back (old binary, state folders restored if changed, old version verified)"}
	bootstrap := []string{prepare,
		"choose the survivor: the host whose verified backup holds the most pins",
		"one at a time, every other host: fresh verified backup, peers rm, stop, copy the state, state cleanup (old state kept)",
		"the survivor: stop, offline backups, swap, migrate, start alone, verify the full pinset",
		"one at a time, every removed host: swap, start with --bootstrap to the survivor, verify (retried, then left out)"}
	width := max(a.MaxUnavailable, 1)
	rolling := []string{prepare,
		fmt.Sprintf("batches of %d host(s) in the order shown%s: stop, offline backups, swap, migrate, start, verify (target version, full pinset, every peer seen)", width,
			map[bool]string{true: fmt.Sprintf(", %d canary host(s) first, watched for %s", a.Canary, a.Soak), false: ""}[a.Canary > 0]),
		fmt.Sprintf("between batches wait %s with the upgraded hosts watched; a failure rolls back what was touched and leaves the rest", a.Settle)}
	fallback, fallbackSteps := plan.Standard, standard
	if raft {
		fallback, fallbackSteps = plan.Bootstrap, bootstrap
	}
	switch a.Procedure {
	case plan.Standard:
		return "standard, as announced", standard
	case plan.Bootstrap:
		return "bootstrap, as announced", bootstrap
	case plan.Rolling:
		return "rolling, as announced", rolling
	}
	steps := append([]string{prepare + "; and learn the RPC protocol of the staged binary by running it briefly against a throwaway config folder"}, rolling[1:]...)
	return fmt.Sprintf("auto: rolling if %s speaks the running cluster's RPC protocol (learned while preparing), else %s (%d hosts, %s consensus); the steps below are the rolling ones, the %s ones are: %s",
		a.Version, fallback, n, map[bool]string{true: "raft", false: "crdt"}[raft], fallback, strings.Join(fallbackSteps[1:], "; ")), steps
}

func checksOf(a *plan.Announcement) []string {
	var out []string
	for _, art := range a.Artifacts {
		out = append(out, fmt.Sprintf("sha256 of %s is %s (checked before anything runs)", art.Source, art.SHA256))
	}
	return append(out,
		"the staged binary's --version is "+a.Version,
		"the live backup re-reads to its manifest's sha256 and pin count",
		"after each start: version "+a.Version+", at least the pins held before the stop, every cluster peer of the plan seen")
}

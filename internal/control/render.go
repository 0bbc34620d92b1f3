package control

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
)

// Report is the one JSON object `upgraded status --json` prints: the plan, its
// phase, and per peer: peer id, version, phase, pins, last error.
type Report struct {
	Leader    string       `json:"leader"`
	Daemons   int          `json:"daemons"`
	Voters    []string     `json:"voters,omitempty"` // the daemons that vote in the raft group; the others receive its log
	Plan      *PlanSummary `json:"plan"`
	Phase     string       `json:"phase"`
	Peers     []PeerReport `json:"peers"`
	Generated time.Time    `json:"generated"`
}

// PlanSummary is a plan without its per-host detail.
type PlanSummary struct {
	ID        string    `json:"id"`
	Version   string    `json:"version"`
	Procedure string    `json:"procedure"`
	Signer    string    `json:"signer"`
	Phase     string    `json:"phase"`
	Reason    string    `json:"reason,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	Succeeded bool      `json:"succeeded"`
	// NotBefore is when a scheduled plan starts.
	NotBefore time.Time `json:"not_before,omitzero"`
	// Paused, and who paused, resumed or aborted the plan.
	Paused  bool   `json:"paused,omitempty"`
	Control string `json:"control,omitempty"`
	// The procedure carried out (auto resolves once the binaries are staged) and why.
	Chosen       string   `json:"chosen,omitempty"`
	ChoiceReason string   `json:"choice_reason,omitempty"`
	Batch        []string `json:"batch,omitempty"`
	// Two-person rule: who signed, how many are required, how many are missing.
	Approvals []string `json:"approvals"`
	Required  int      `json:"required"`
	Missing   int      `json:"missing"`
	// Bootstrap procedure: the host that stays, why, and the order of the others.
	Survivor       string   `json:"survivor,omitempty"`
	SurvivorReason string   `json:"survivor_reason,omitempty"`
	Order          []string `json:"order,omitempty"`
}

// PeerReport is one host's line.
type PeerReport struct {
	PeerID     string `json:"peer_id"` // the IPFS Cluster peer
	Host       string `json:"host"`    // the upgraded daemon beside it
	Name       string `json:"name,omitempty"`
	Version    string `json:"version"`
	Phase      string `json:"phase"` // the host's step in the plan ("idle" without a plan)
	Pins       int    `json:"pins"`
	BackupPins int    `json:"backup_pins"`
	LastError  string `json:"last_error"`
	Detail     string `json:"detail,omitempty"`
	// Since is when the host entered its current step.
	Since time.Time `json:"since,omitempty"`
	// Refuses says why this host will not take part (its trust settings differ).
	Refuses string `json:"refuses,omitempty"`
}

// MakeReport summarises a daemon's status.
func MakeReport(s *Status, now time.Time) Report {
	r := Report{Leader: s.Leader, Daemons: len(s.Members), Voters: s.Voters, Phase: "idle", Generated: now.UTC(), Peers: []PeerReport{}}
	ids := make([]string, 0, len(s.Hosts))
	for id := range s.Hosts {
		ids = append(ids, id)
	}
	if p := s.Plan; p != nil {
		r.Plan = &PlanSummary{ID: p.ID, Version: p.Version, Procedure: string(p.Procedure), Signer: p.Signer,
			Phase: string(p.Phase), Reason: p.Reason, Created: p.Created, Updated: p.Updated, Succeeded: p.Succeeded(),
			Survivor: p.Survivor, SurvivorReason: p.SurvivorReason, Order: p.Order,
			Required: max(p.Policy.Threshold, 1), Missing: p.Missing(), Approvals: []string{},
			Chosen: string(p.Chosen), ChoiceReason: p.ChoiceReason, Batch: p.Batch, Paused: p.Paused, Control: p.Control, NotBefore: p.NotBefore}
		for id := range p.Approvals {
			r.Plan.Approvals = append(r.Plan.Approvals, id)
		}
		sort.Strings(r.Plan.Approvals)
		r.Phase = string(p.Phase)
		for id := range p.Hosts {
			if _, ok := s.Hosts[id]; !ok {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	cluster, _ := (&plan.State{Hosts: s.Hosts}).ClusterPolicy()
	for _, id := range ids {
		pr := PeerReport{Host: id, Phase: "idle"}
		if h, ok := s.Hosts[id]; ok {
			pr.PeerID, pr.Name, pr.Version = h.ClusterPeer, h.Name, h.Version
			if !h.Policy.Equal(cluster) {
				pr.Refuses = fmt.Sprintf("trust settings differ: this host requires %s, the cluster %s", h.Policy, cluster)
			}
		}
		if s.Plan != nil {
			if hp, ok := s.Plan.Hosts[id]; ok {
				pr.Phase, pr.Pins, pr.BackupPins, pr.LastError, pr.Detail = string(hp.Step), hp.Pins, hp.BackupPins, hp.Error, hp.Detail
				pr.Since = hp.StepStarted
				if hp.Version != "" {
					pr.Version = hp.Version
				}
			}
		}
		r.Peers = append(r.Peers, pr)
	}
	return r
}

// daemonCount says how many daemons there are and, when not all of them, how
// many vote in the raft group.
func daemonCount(r Report) string {
	if len(r.Voters) == 0 || len(r.Voters) == r.Daemons {
		return fmt.Sprintf("%d daemons", r.Daemons)
	}
	return fmt.Sprintf("%d daemons (%d voting)", r.Daemons, len(r.Voters))
}

// RenderTable writes the report for a person.
func RenderTable(w io.Writer, r Report) {
	if r.Plan == nil {
		fmt.Fprintf(w, "no plan yet; %s, leader %s\n", daemonCount(r), plan.ShortID(r.Leader))
	} else {
		p := r.Plan
		fmt.Fprintf(w, "plan %s: %s upgrade to %s, %s", p.ID, p.Procedure, p.Version, p.Phase)
		if !p.Ended() {
			fmt.Fprintf(w, " (for %s)", time.Since(p.Created).Round(100*time.Millisecond))
		}
		fmt.Fprintln(w)
		if p.Reason != "" {
			fmt.Fprintf(w, "  %s\n", p.Reason)
		}
		fmt.Fprintf(w, "  signed by %s; %s, leader %s\n", plan.ShortID(p.Signer), daemonCount(r), plan.ShortID(r.Leader))
		if p.Control != "" {
			fmt.Fprintf(w, "  %s\n", p.Control)
		}
		if p.Phase == string(plan.PhaseScheduled) {
			fmt.Fprintf(w, "  starts at %s (--at or the next maintenance window)\n", p.NotBefore.Local().Format(time.RFC1123))
		}
		if p.Chosen != "" && p.Chosen != p.Procedure {
			fmt.Fprintf(w, "  procedure %s: %s\n", p.Chosen, p.ChoiceReason)
		}
		if p.Survivor != "" {
			fmt.Fprintf(w, "  survivor %s: %s\n", plan.ShortID(p.Survivor), p.SurvivorReason)
		}
		if p.Required > 1 {
			signed := make([]string, len(p.Approvals))
			for i, a := range p.Approvals {
				signed[i] = plan.ShortID(a)
			}
			fmt.Fprintf(w, "  approvals: %d of %d (%s)", len(p.Approvals), p.Required, strings.Join(signed, ", "))
			if p.Missing > 0 && !p.Ended() {
				fmt.Fprintf(w, "; %d more needed", p.Missing)
			}
			fmt.Fprintln(w)
		}
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tNAME\tVERSION\tPHASE\tPINS\tLAST ERROR")
	for _, p := range r.Peers {
		last := p.LastError
		if p.Refuses != "" {
			last = "REFUSES TO TAKE PART: " + p.Refuses
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", p.PeerID, p.Name, p.Version, p.Phase, p.Pins, oneLine(last))
	}
	tw.Flush()
}

// Ended reports whether the summarised plan has ended.
func (p *PlanSummary) Ended() bool { return plan.Phase(p.Phase).Terminal() }

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// PrintChanges prints the plan's phase and each host's step when they change.
func PrintChanges(out io.Writer, p *plan.Plan, seen map[string]string, phase *string) {
	if string(p.Phase) != *phase {
		*phase = string(p.Phase)
		line := string(p.Phase)
		if p.Phase == plan.PhaseSwitching && p.ChoiceReason != "" {
			line += " (" + string(p.Proc()) + ": " + p.ChoiceReason + ")"
		}
		if p.Phase.Terminal() && p.Reason != "" {
			line += ": " + p.Reason
		}
		fmt.Fprintf(out, "%s  plan %s\n", time.Now().Format("15:04:05.000"), line)
	}
	for _, h := range p.HostIDs() {
		hp := p.Hosts[h]
		line := string(hp.Step)
		if hp.Detail != "" {
			line += ": " + hp.Detail
		}
		if hp.Step == plan.StepFailed || hp.Step == plan.StepRollbackErr {
			line += " (" + hp.Error + ")"
		}
		if seen[h] != line {
			seen[h] = line
			fmt.Fprintf(out, "%s    host %s  %s\n", time.Now().Format("15:04:05.000"), plan.ShortID(h), line)
		}
	}
}

// stepRank places a host's step on its way through a plan, for the progress
// bars: how many of the stations a host passes it has passed.
var stepRank = map[string]int{
	string(plan.StepPending): 0, string(plan.StepPreparing): 1, string(plan.StepPrepared): 2,
	string(plan.StepStopping): 3, string(plan.StepRemoving): 3, string(plan.StepRemoved): 4,
	string(plan.StepSwapping): 4, string(plan.StepRejoining): 5, string(plan.StepStarting): 5,
	string(plan.StepVerified): 6, string(plan.StepFailed): 6, string(plan.StepRollingBack): 4,
	string(plan.StepRolledBack): 6, string(plan.StepRollbackErr): 6, string(plan.StepLeftOut): 6,
}

const stations = 6

// RenderWatch draws the live view of `status --watch`: the plan, and per
// host a progress bar through its steps, the time in the current step, and
// its error as soon as there is one.
func RenderWatch(w io.Writer, r Report, now time.Time) {
	if r.Plan == nil {
		fmt.Fprintf(w, "no plan yet; %s, leader %s\n", daemonCount(r), plan.ShortID(r.Leader))
		return
	}
	p := r.Plan
	fmt.Fprintf(w, "plan %s  %s upgrade to %s  %s  %s\n", p.ID, p.Procedure, p.Version, strings.ToUpper(p.Phase), now.Sub(p.Created).Round(100*time.Millisecond))
	if p.ChoiceReason != "" {
		fmt.Fprintf(w, "  %s: %s\n", p.Chosen, p.ChoiceReason)
	}
	if p.Reason != "" {
		fmt.Fprintf(w, "  %s\n", p.Reason)
	}
	if p.Control != "" {
		fmt.Fprintf(w, "  %s\n", p.Control)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, h := range r.Peers {
		n := stepRank[h.Phase]
		bar := "[" + strings.Repeat("#", n) + strings.Repeat(".", stations-n) + "]"
		mark := ""
		switch plan.Step(h.Phase) {
		case plan.StepVerified, plan.StepRolledBack:
			mark = "ok"
		case plan.StepFailed, plan.StepRollbackErr, plan.StepLeftOut:
			mark = "FAILED"
		}
		elapsed := ""
		if !h.Since.IsZero() {
			elapsed = now.Sub(h.Since).Round(100 * time.Millisecond).String()
		}
		name := h.Name
		if name == "" {
			name = plan.ShortID(h.Host)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d pins\t%s\n", name, bar, h.Phase, elapsed, h.Version, h.Pins, mark)
		if h.LastError != "" && mark == "FAILED" {
			fmt.Fprintf(tw, "  \t  error: %s\n", oneLine(h.LastError))
		} else if h.Detail != "" && mark == "" {
			fmt.Fprintf(tw, "  \t  %s\n", oneLine(h.Detail))
		}
	}
	tw.Flush()
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination"
	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/internal/harness"
)

// operatorKeys makes n operator keys in dir and returns their files and IDs.
func operatorKeys(t *testing.T, n int) ([]string, []string) {
	t.Helper()
	var files, ids []string
	for i := 0; i < n; i++ {
		f := filepath.Join(t.TempDir(), "op.key")
		id, err := envelope.GenerateKeyFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files, ids = append(files, f), append(ids, id.String())
	}
	return files, ids
}

func proposedPlan(t *testing.T, ctx context.Context, c *harness.Cluster, rel []string) string {
	t.Helper()
	id, err := c.Announce(ctx, 0, rel)
	if err != nil {
		t.Fatal(err)
	}
	// Every daemon learns of it (the one that approves included).
	for i := range c.Hosts {
		err := simtest.WaitFor(ctx, fmt.Sprintf("plan %s proposed on daemon %d", id, i), func() bool {
			st, err := c.Status(ctx, i)
			return err == nil && st.Plan != nil && st.Plan.ID == id && st.Plan.Phase == plan.PhaseProposed
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// TestTwoPersonRule: 3 hosts, 3 operator keys, 2 approvals required.
func TestTwoPersonRule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	keys, ids := operatorKeys(t, 2) // besides the harness's own operator key
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 6, tune: func(_ int, cfg *config.Config) {
		cfg.Trust = append(cfg.Trust, ids...)
		cfg.Approvals = 2
		cfg.ProposalTTL = 8 * time.Second
	}})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	approve := func(key, planID, decision string) (string, error) {
		return c.CLI(ctx, decision, planID, "--config", c.Hosts[2].ConfigDir, "--key", key)
	}

	// One signature: nothing happens until the proposal expires.
	first := proposedPlan(t, ctx, c, rel)
	if _, err := approve(c.KeyFile, first, "approve"); err == nil || !strings.Contains(err.Error(), "counts once") {
		t.Fatalf("the proposer approving again must count once: %v", err)
	}
	stranger, _ := operatorKeys(t, 1)
	if _, err := approve(stranger[0], first, "approve"); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("an untrusted key must be refused: %v", err)
	}
	// An approval of altered content (another version, another sha256).
	st, _ := c.Status(ctx, 0)
	cl := control.NewClient(c.Socket(1))
	key2, _ := envelope.LoadKeyFile(keys[0])
	for _, alter := range []func(p *plan.Plan){
		func(p *plan.Plan) { p.Version = "1.1.7" },
		func(p *plan.Plan) {
			p.Artifacts = append([]plan.Artifact(nil), p.Artifacts...)
			p.Artifacts[0].SHA256 = strings.Repeat("0", 64)
		},
	} {
		altered := st.Plan.Clone()
		alter(altered)
		env, err := coordination.SealApproval(key2, altered, "approve")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Approve(ctx, env); err == nil || !strings.Contains(err.Error(), "other content") {
			t.Fatalf("approval of altered content: %v", err)
		}
	}
	p, err := c.WaitPlan(ctx, 0, first)
	if err != nil {
		t.Fatal(err)
	}
	if p.Phase != plan.PhaseFailed || !strings.Contains(p.Reason, "expired with 1 of 2") {
		t.Fatalf("want the proposal expired with 1 approval, got %s: %s", p.Phase, p.Reason)
	}
	if _, err := approve(keys[0], first, "approve"); err == nil {
		t.Fatal("an expired proposal was approved")
	}
	requireAll(t, ctx, c, "1.0.8", 6)

	// A rejection withdraws the plan: it never starts.
	second := proposedPlan(t, ctx, c, rel)
	if out, err := approve(keys[1], second, "reject"); err != nil || !strings.Contains(out, "withdrawn") {
		t.Fatalf("reject: %s %v", out, err)
	}
	requireAll(t, ctx, c, "1.0.8", 6)

	// A second distinct trusted key: the upgrade runs.
	third := proposedPlan(t, ctx, c, rel)
	if _, err := approve(keys[0], third, "approve"); err != nil {
		t.Fatal(err)
	}
	p, err = c.WaitPlan(ctx, 0, third)
	if err != nil || !p.Succeeded() {
		t.Fatalf("approved plan: %v %s %s", err, p.Phase, p.Reason)
	}
	if len(p.Approvals) != 2 {
		t.Fatalf("the plan must record both signatures, has %d", len(p.Approvals))
	}
	for signer, ap := range p.Approvals { // any host can check every signature
		typ := plan.ApprovalType
		if signer == p.Signer {
			typ = plan.AnnounceType
		}
		if _, got, err := envelope.Open(ap.Envelope, typ, nil); err != nil || got.String() != signer {
			t.Fatalf("recorded signature of %s does not verify: %v", signer, err)
		}
	}
	requireAll(t, ctx, c, "1.1.6", 6)
}

// TestHostWithAnotherThresholdRefuses: a host whose threshold differs from
// the cluster's refuses to take part, and status says so.
func TestHostWithAnotherThresholdRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, ids := operatorKeys(t, 2)
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 3, tune: func(i int, cfg *config.Config) {
		cfg.Trust = append(cfg.Trust, ids...)
		cfg.Approvals = 2
		if i == 2 {
			cfg.Approvals = 1
		}
	}})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Announce(ctx, 0, rel); err == nil || !strings.Contains(err.Error(), "refuses to take part") {
		t.Fatalf("want a refusal naming the odd host, got %v", err)
	}
	out, err := c.CLI(ctx, "status", "--config", c.Hosts[0].ConfigDir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r control.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	odd := 0
	for _, p := range r.Peers {
		if strings.Contains(p.Refuses, "requires 1 of 3 keys, the cluster 2 of 3 keys") {
			odd++
		}
	}
	if odd != 1 {
		t.Fatalf("status must show the one host refusing: %s", out)
	}
	requireAll(t, ctx, c, "1.0.8", 3)
}

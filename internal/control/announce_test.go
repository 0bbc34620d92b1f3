package control

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/plan"
)

// commitBackend takes an announcement and commits its plan when told to,
// saying so on its changes channel as the daemon's FSM does.
type commitBackend struct {
	plainBackend
	mu        sync.Mutex
	committed bool
	changes   chan struct{}
	looked    chan struct{} // closed at the first look that found no plan
}

func (b *commitBackend) Announce(context.Context, []byte) (*plan.Announcement, *PlanAnswer, error) {
	return &plan.Announcement{ID: "p1"}, nil, nil
}

func (b *commitBackend) Plan(string) PlanAnswer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.committed {
		select {
		case <-b.looked:
		default:
			close(b.looked)
		}
		return PlanAnswer{}
	}
	return PlanAnswer{Plan: &plan.Plan{Announcement: plan.Announcement{ID: "p1"}}}
}

func (b *commitBackend) Changes() (<-chan struct{}, func()) { return b.changes, func() {} }

func (b *commitBackend) commit() {
	b.mu.Lock()
	b.committed = true
	b.mu.Unlock()
	b.changes <- struct{}{}
}

// The announce answer leaves at the change that committed the plan, not at
// the next poll: the plan is committed after the first look found nothing,
// and with the poll an hour away only the change can bring another look
// before the 15 s acknowledgement timeout.
func TestAnnounceAnswersAtTheCommit(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &commitBackend{changes: make(chan struct{}, 1), looked: make(chan struct{})}
	s, err := Listen(filepath.Join(dir, "s.sock"), b, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.poll = time.Hour
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		select {
		case <-b.looked:
			b.commit()
		case <-ctx.Done():
		}
	}()
	p, err := NewClient(filepath.Join(dir, "s.sock")).Announce(ctx, []byte("{}"))
	if err != nil {
		t.Fatalf("announce: %v", err)
	}
	if p == nil || p.ID != "p1" {
		t.Fatalf("answer %+v, want plan p1", p)
	}
}

// leaderBackend is a daemon whose raft leader answered the announcement: the
// plan state here never holds it, so only the leader's answer can be sent.
type leaderBackend struct {
	plainBackend
	answer PlanAnswer
}

func (b *leaderBackend) Announce(context.Context, []byte) (*plan.Announcement, *PlanAnswer, error) {
	return &plan.Announcement{ID: "p1"}, &b.answer, nil
}

func (b *leaderBackend) Plan(string) PlanAnswer { return PlanAnswer{} }

func (b *leaderBackend) Changes() (<-chan struct{}, func()) { return nil, func() {} }

// The leader's answer is the announce answer, a plan or a refusal, without
// waiting for this daemon's copy of the plan state.
func TestAnnounceAnswersWithTheLeadersOutcome(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &leaderBackend{}
	s, err := Listen(filepath.Join(dir, "s.sock"), b, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.AckTimeout = time.Hour // only the leader's answer can end the wait in time
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Close() })
	cl := NewClient(filepath.Join(dir, "s.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	b.answer = PlanAnswer{Plan: &plan.Plan{Announcement: plan.Announcement{ID: "p1"}, Phase: plan.PhasePreparing}}
	p, err := cl.Announce(ctx, []byte("{}"))
	if err != nil || p == nil || p.ID != "p1" || p.Phase != plan.PhasePreparing {
		t.Fatalf("answer %+v, %v: want plan p1 preparing", p, err)
	}
	b.answer = PlanAnswer{Rejected: "another plan is in progress"}
	if _, err := cl.Announce(ctx, []byte("{}")); err == nil || !strings.Contains(err.Error(), "refused by the cluster: another plan is in progress") {
		t.Fatalf("answer to a refused announcement: %v", err)
	}
}

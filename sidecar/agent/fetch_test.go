package agent

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// gatedFetcher holds every fetch until all of the plan's artifacts are asked
// for, as a seeder that must be heard fetching its own artifact while the
// others are still on their way to it.
type gatedFetcher struct {
	mu      sync.Mutex
	asked   []string
	all     chan struct{}
	want    int
	fail    string // a source whose fetch fails
	stopped []string
}

func (f *gatedFetcher) FetchArtifact(ctx context.Context, _ *plan.Plan, a plan.Artifact, dir string) (string, error) {
	f.mu.Lock()
	f.asked = append(f.asked, a.Source)
	if len(f.asked) == f.want {
		close(f.all)
	}
	f.mu.Unlock()
	select {
	case <-f.all:
	case <-time.After(10 * time.Second):
		return "", errors.New("the other artifacts were never asked for while this one was fetched")
	}
	if a.Source == f.fail {
		return "", errors.New("source answered 404")
	}
	if a.Source != "http://h/ipfs-cluster-service.tar.gz" {
		<-ctx.Done() // the slow one: only a cancellation ends it
		f.mu.Lock()
		f.stopped = append(f.stopped, a.Source)
		f.mu.Unlock()
		return "", ctx.Err()
	}
	return filepath.Join(dir, filepath.Base(a.Source)), nil
}

func testPlan(sources ...string) *plan.Plan {
	p := &plan.Plan{Announcement: plan.Announcement{ID: "p1", Version: "1.1.6"}}
	for _, s := range sources {
		p.Artifacts = append(p.Artifacts, plan.Artifact{Source: s, SHA256: strings.Repeat("a", 64)})
	}
	return p
}

func TestFetchArtifactsAtOnceInThePlansOrder(t *testing.T) {
	srcs := []string{"http://h/ipfs-cluster-service.tar.gz", "http://h/ipfs-cluster-ctl.tar.gz"}
	f := &gatedFetcher{all: make(chan struct{}), want: 2, fail: srcs[1]}
	a := &Agent{cfg: Config{Artifacts: f}, log: zap.NewNop()}
	_, err := a.fetchArtifacts(context.Background(), testPlan(srcs...), "/stage")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), srcs[1]) {
		t.Fatalf("want the failing artifact's error, got %v", err)
	}

	// Both succeed: paths come back in the plan's order, not the finishing order.
	ok := &okFetcher{delay: map[string]time.Duration{srcs[0]: 50 * time.Millisecond}}
	a.cfg.Artifacts = ok
	files, err := a.fetchArtifacts(context.Background(), testPlan(srcs...), "/stage")
	if err != nil {
		t.Fatal(err)
	}
	if files[0] != "/stage/ipfs-cluster-service.tar.gz" || files[1] != "/stage/ipfs-cluster-ctl.tar.gz" {
		t.Fatalf("files %v are not in the plan's order", files)
	}
}

func TestFetchArtifactsFirstFailureCancelsTheOthers(t *testing.T) {
	srcs := []string{"http://h/ipfs-cluster-ctl.tar.gz", "http://h/ipfs-cluster-service.tar.gz"}
	// The ctl fetch waits for a cancellation; the service one fails.
	f := &gatedFetcher{all: make(chan struct{}), want: 2, fail: srcs[1]}
	a := &Agent{cfg: Config{Artifacts: f}, log: zap.NewNop()}
	_, err := a.fetchArtifacts(context.Background(), testPlan(srcs...), "/stage")
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("want the failure, not the cancellation it caused: %v", err)
	}
	if len(f.stopped) != 1 || f.stopped[0] != srcs[0] {
		t.Fatalf("the other fetch was not cancelled: %v", f.stopped)
	}
}

func TestFetchArtifactsRefusesTwoArtifactsOfOneName(t *testing.T) {
	f := &okFetcher{}
	a := &Agent{cfg: Config{Artifacts: f}, log: zap.NewNop()}
	_, err := a.fetchArtifacts(context.Background(),
		testPlan("http://a/ipfs-cluster-service.tar.gz", "http://b/ipfs-cluster-service.tar.gz"), "/stage")
	if err == nil || !strings.Contains(err.Error(), "distinct file names") {
		t.Fatalf("want a refusal, got %v", err)
	}
	if f.calls != 0 {
		t.Fatalf("%d fetches started before the refusal", f.calls)
	}
}

type okFetcher struct {
	mu    sync.Mutex
	calls int
	delay map[string]time.Duration
}

func (f *okFetcher) FetchArtifact(_ context.Context, _ *plan.Plan, a plan.Artifact, dir string) (string, error) {
	f.mu.Lock()
	f.calls++
	d := f.delay[a.Source]
	f.mu.Unlock()
	time.Sleep(d)
	return filepath.Join(dir, filepath.Base(a.Source)), nil
}

// Package execrunner supervises the IPFS Cluster peer as a child process of
// the upgraded daemon: `ipfs-cluster-service --config DIR daemon [args]`.
//
// The peer runs in its own process group without a parent-death signal, so a
// killed daemon does not take the peer down with it; a pidfile lets the next
// daemon adopt the running peer instead of starting a second one.
package execrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar"
)

// killWait bounds the wait after SIGKILL, which the kernel acts on at once
// unless the process is stuck in the kernel.
const killWait = 10 * time.Second

// Runner supervises one cluster peer. It is safe for concurrent use.
type Runner struct {
	cfg Config
	log *zap.Logger

	opMu sync.Mutex // serialises Start, Stop and Close

	mu       sync.Mutex // guards the fields below
	cur      *proc      // the peer process, own or adopted; nil when none
	sup      *supervision
	restarts int
	lastExit string
}

var _ sidecar.Runner = (*Runner)(nil)

// supervision is one supervising goroutine: closing stop asks it to return
// (leaving the process alone), done is closed once it has.
type supervision struct {
	stop chan struct{}
	done chan struct{}
}

// proc is a peer process. Our own children are reaped by a goroutine that
// closes exited; adopted processes (exited == nil) are polled through /proc.
type proc struct {
	pid      int
	since    time.Time
	exited   chan struct{}
	exitDesc string // written before exited is closed
}

func (p *proc) gone() bool {
	if p.exited == nil {
		return !processAlive(p.pid)
	}
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *proc) describeExit() string {
	if p.exited == nil {
		return fmt.Sprintf("adopted peer (pid %d) exited; its exit status is unknown", p.pid)
	}
	return p.exitDesc
}

// New validates cfg. It starts nothing; a peer left running by an earlier
// daemon is adopted by Start (and reported by Status, stopped by Stop).
func New(cfg Config) (*Runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, log: cfg.Logger.Named("exec-runner")}, nil
}

// ErrAlreadyRunning is returned by Start with extra arguments while a peer
// runs: they could not take effect, and ignoring them silently could turn a
// bootstrap into a plain start.
var ErrAlreadyRunning = errors.New("cluster peer already running")

// Start adopts a running peer recorded in the pidfile or starts a new one,
// then supervises it: an unexpected exit is followed by a restart with
// exponential backoff. Restarts never repeat opts.ExtraArgs: a second
// `--bootstrap` would move the raft folder aside again.
func (r *Runner) Start(ctx context.Context, opts sidecar.StartOptions) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	p, supervising := r.cur, r.sup != nil
	r.mu.Unlock()
	if p != nil && p.gone() {
		p = nil
	}
	if supervising || p != nil {
		return r.alreadyRunning(p, opts)
	}
	if p = r.adoptable(); p != nil {
		if err := r.alreadyRunning(p, opts); err != nil {
			return err
		}
		r.log.Info("adopting the cluster peer left running by an earlier daemon", zap.Int("pid", p.pid))
	} else {
		var err error
		if p, err = r.launch(opts.ExtraArgs); err != nil {
			return err
		}
	}
	r.supervise(p)
	return nil
}

func (r *Runner) alreadyRunning(p *proc, opts sidecar.StartOptions) error {
	if len(opts.ExtraArgs) == 0 {
		return nil
	}
	pid := 0
	if p != nil {
		pid = p.pid
	}
	return fmt.Errorf("starting the cluster peer with %v: %w (pid %d); stop it first", opts.ExtraArgs, ErrAlreadyRunning, pid)
}

// supervise records p as the current peer and starts its supervising goroutine.
func (r *Runner) supervise(p *proc) {
	sup := &supervision{stop: make(chan struct{}), done: make(chan struct{})}
	r.mu.Lock()
	r.cur, r.sup = p, sup
	r.mu.Unlock()
	go r.superviseLoop(sup, p)
}

// superviseLoop waits for the peer to exit and restarts it until stopped.
func (r *Runner) superviseLoop(sup *supervision, p *proc) {
	defer close(sup.done)
	b := backoff{min: r.cfg.MinBackoff, max: r.cfg.MaxBackoff, stableAfter: r.cfg.StableAfter}
	for {
		var delay time.Duration
		if p != nil {
			if !r.waitGone(p, sup.stop, 0, r.cfg.PollInterval) {
				return
			}
			desc := p.describeExit()
			delay = b.next(time.Since(p.since))
			r.mu.Lock()
			r.cur, r.lastExit = nil, desc
			r.mu.Unlock()
			r.log.Warn("cluster peer exited unexpectedly; restarting it",
				zap.Int("pid", p.pid), zap.String("exit", desc), zap.Duration("restart_in", delay))
		} else {
			delay = b.next(0)
		}
		if !sleep(delay, sup.stop) {
			return
		}
		np, err := r.launch(nil)
		if err != nil {
			r.log.Error("could not restart the cluster peer", zap.Error(err))
			r.mu.Lock()
			r.lastExit = "restart failed: " + err.Error()
			r.mu.Unlock()
			p = nil
			continue
		}
		r.mu.Lock()
		r.cur = np
		r.restarts++
		r.mu.Unlock()
		p = np
	}
}

// sleep waits d unless stop is closed first; it reports whether d passed.
func sleep(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// waitGone waits until p is gone (true), or cancel is closed or the timeout
// (if > 0) passes (false).
func (r *Runner) waitGone(p *proc, cancel <-chan struct{}, timeout, poll time.Duration) bool {
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	var tick <-chan time.Time
	if p.exited == nil {
		tk := time.NewTicker(poll)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		if p.gone() {
			return true
		}
		select {
		case <-p.exited: // nil for adopted processes: never ready
			return true
		case <-tick:
		case <-timer:
			return p.gone()
		case <-cancel:
			return false
		}
	}
}

// Stop ends supervision, then stops the peer: SIGTERM, and SIGKILL if it is
// still there after StopTimeout. It returns once the process is gone. A peer
// that is not running makes Stop a no-op.
func (r *Runner) Stop(ctx context.Context) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if err := r.endSupervision(ctx); err != nil {
		return fmt.Errorf("stopping the cluster peer: %w", err)
	}
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	if p == nil {
		p = r.adoptable()
	}
	if p == nil || p.gone() {
		r.forget("")
		return nil
	}
	if err := r.terminate(ctx, p); err != nil {
		return err
	}
	r.forget(p.describeExit())
	return nil
}

// Close ends supervision but leaves the peer running, recorded in the
// pidfile for the next daemon to adopt: the daemon may exit (to be upgraded
// itself, say) without taking the cluster down. The reaper of a child the
// runner started stays until that child exits, so it never lingers as a zombie.
func (r *Runner) Close(ctx context.Context) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	return r.endSupervision(ctx)
}

func (r *Runner) endSupervision(ctx context.Context) error {
	r.mu.Lock()
	sup := r.sup
	r.sup = nil
	r.mu.Unlock()
	if sup == nil {
		return nil
	}
	close(sup.stop)
	select {
	case <-sup.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forget drops the stopped peer and its pidfile.
func (r *Runner) forget(exit string) {
	r.mu.Lock()
	r.cur = nil
	if exit != "" {
		r.lastExit = exit
	}
	r.mu.Unlock()
	if err := os.Remove(r.cfg.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("could not remove the pidfile", zap.String("pidfile", r.cfg.PIDFile), zap.Error(err))
	}
}

func (r *Runner) terminate(ctx context.Context, p *proc) error {
	poll := min(r.cfg.PollInterval, 50*time.Millisecond)
	r.log.Info("stopping the cluster peer", zap.Int("pid", p.pid), zap.Duration("grace", r.cfg.StopTimeout))
	if err := sendSignal(p.pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping the cluster peer: %w", err)
	}
	if r.waitGone(p, ctx.Done(), r.cfg.StopTimeout, poll) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stopping the cluster peer (pid %d): %w", p.pid, err)
	}
	r.log.Warn("cluster peer did not stop in time; killing it", zap.Int("pid", p.pid), zap.Duration("waited", r.cfg.StopTimeout))
	if err := sendSignal(p.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing the cluster peer: %w", err)
	}
	if !r.waitGone(p, ctx.Done(), killWait, poll) {
		return fmt.Errorf("cluster peer (pid %d) still there after SIGKILL", p.pid)
	}
	return nil
}

// Status reports the supervised (or adoptable) peer.
func (r *Runner) Status(ctx context.Context) (sidecar.Status, error) {
	if err := ctx.Err(); err != nil {
		return sidecar.Status{}, err
	}
	r.mu.Lock()
	p, supervising := r.cur, r.sup != nil
	st := sidecar.Status{Restarts: r.restarts, LastExit: r.lastExit}
	r.mu.Unlock()
	if p == nil && !supervising {
		p = r.adoptable()
	}
	if p != nil && !p.gone() {
		st.Running, st.PID, st.Since = true, p.pid, p.since
	}
	return st, nil
}

// adoptable returns the live peer named by the pidfile, if it is ours. A
// pidfile naming a dead or foreign process is stale and removed.
func (r *Runner) adoptable() *proc {
	rec, err := readPIDFile(r.cfg.PIDFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	reason := ""
	switch {
	case err != nil:
		reason = err.Error()
	case !processAlive(rec.PID):
		reason = "the process is gone"
	case !isOurPeer(rec, r.cfg.ClusterConfigDir):
		reason = "the process is not the cluster peer of this config folder"
	default:
		return &proc{pid: rec.PID, since: rec.Started}
	}
	r.log.Info("ignoring a stale pidfile", zap.String("pidfile", r.cfg.PIDFile), zap.Int("pid", rec.PID), zap.String("reason", reason))
	if err := os.Remove(r.cfg.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("could not remove the stale pidfile", zap.Error(err))
	}
	return nil
}

// launch starts a new peer process and records it in the pidfile.
func (r *Runner) launch(extra []string) (*proc, error) {
	bin, err := r.cfg.Binary()
	if err != nil {
		return nil, fmt.Errorf("finding the cluster peer binary: %w", err)
	}
	args := append([]string{"--config", r.cfg.ClusterConfigDir, "daemon"}, extra...)
	logf, err := r.openLog()
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	fmt.Fprintf(logf, "=== upgraded: starting %s %s at %s\n", bin, strings.Join(args, " "), time.Now().Format(time.RFC3339))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), r.cfg.Env...)
	// Own process group: signals meant for the daemon (a terminal's Ctrl-C,
	// a group kill) do not reach the peer. No Pdeathsig, on purpose.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &proc{pid: cmd.Process.Pid, since: time.Now(), exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.exitDesc = describeWait(err, cmd.ProcessState)
		close(p.exited)
	}()
	rec := pidRecord{PID: p.pid, Binary: bin, Config: r.cfg.ClusterConfigDir, Started: p.since}
	if err := writePIDFile(r.cfg.PIDFile, rec); err != nil {
		// A peer that no later daemon could find must not keep running.
		_ = sendSignal(p.pid, syscall.SIGKILL)
		<-p.exited
		return nil, fmt.Errorf("recording the cluster peer: %w", err)
	}
	r.log.Info("started the cluster peer", zap.Int("pid", p.pid), zap.String("binary", bin), zap.Strings("args", args))
	return p, nil
}

func (r *Runner) openLog() (*os.File, error) {
	if err := os.MkdirAll(r.cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the peer log folder: %w", err)
	}
	path := filepath.Join(r.cfg.LogDir, LogFileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the peer log %s: %w", path, err)
	}
	return f, nil
}

func describeWait(err error, ps *os.ProcessState) string {
	if ps != nil {
		return ps.String()
	}
	if err != nil {
		return err.Error()
	}
	return "exited"
}

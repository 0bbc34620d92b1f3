// Package dockerrunner runs the IPFS Cluster peer as a container through the
// Docker Engine API (Docker, or podman's compatible service): it starts and
// stops the named container, and moves it to another image by recreating it
// with the same definition, keeping the previous definition for rollback.
//
// Which image the container should run follows the version upgraded made
// current (the binstore's `current` link): Start recreates the container from
// the image staged for that version when it runs another one. So the agent's
// swap (and a rollback's swap back) stays the same link switch as with the
// other runners, and the image switch happens at the next Start.
package dockerrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar"
)

// Defaults of Config.
const (
	DefaultServicePath = "/usr/local/bin/ipfs-cluster-service"
	DefaultCtlPath     = "/usr/local/bin/ipfs-cluster-ctl"
)

// Config wires a Runner. Engine, Container, StateDir and Logger are required.
type Config struct {
	Engine    *Engine
	Container string // name of the peer's container
	// StateDir is the runner's folder inside upgraded's: image records and
	// the container definitions (current and previous) live there.
	StateDir string
	// Version returns the version the peer should run (the binstore's current
	// link); an error or "" leaves the container on its image.
	Version func() (string, error)
	// ServicePath and CtlPath are where images hold the binaries.
	ServicePath, CtlPath string
	StopTimeout          time.Duration
	Logger               *zap.Logger
}

// Runner implements sidecar.Runner on a container.
type Runner struct {
	cfg Config
	e   *Engine
	log *zap.Logger
	mu  sync.Mutex // one start, stop or switch at a time
}

var _ sidecar.Runner = (*Runner)(nil)

// New checks cfg and that the engine answers, so a missing or forbidden
// socket is an error at start-up, before any plan could touch the peer.
func New(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.Engine == nil || cfg.Container == "" || cfg.StateDir == "" || cfg.Logger == nil {
		return nil, errors.New("docker runner: engine, container name, state folder and logger are required")
	}
	if cfg.ServicePath == "" {
		cfg.ServicePath = DefaultServicePath
	}
	if cfg.CtlPath == "" {
		cfg.CtlPath = DefaultCtlPath
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.Version == nil {
		cfg.Version = func() (string, error) { return "", nil }
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the docker runner's folder: %w", err)
	}
	if err := cfg.Engine.Ping(ctx); err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, e: cfg.Engine, log: cfg.Logger}, nil
}

// Start makes the container run the image of the current version with opts,
// recreating it first when its image or extra arguments differ.
func (r *Runner) Start(ctx context.Context, opts sidecar.StartOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want, err := r.wantedImage()
	if err != nil {
		return err
	}
	info, err := r.e.InspectContainer(ctx, r.cfg.Container)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	cur, err := r.loadDef(currentDef)
	if err != nil {
		return err
	}
	recreate := info == nil // removed by a switch that was cut short: the saved definition brings it back
	if info != nil && want != nil && !sameImage(info.Image, want.ID) {
		recreate = true
	}
	if info != nil && cur != nil && sameImage(info.Image, cur.ImageID) && !slices.Equal(cur.ExtraArgs, opts.ExtraArgs) {
		recreate = true
	}
	if info != nil && cur == nil && len(opts.ExtraArgs) > 0 {
		recreate = true
	}
	if recreate {
		ref := ""
		if want != nil {
			ref = want.Ref
		}
		if err := r.recreate(ctx, info, ref, opts.ExtraArgs); err != nil {
			return err
		}
	}
	return r.e.StartContainer(ctx, r.cfg.Container)
}

// SwitchImage recreates the container from ref with the same definition
// (config, mounts, network mode, labels) and leaves it stopped. The old
// definition is kept in the runner's folder as the previous one.
func (r *Runner) SwitchImage(ctx context.Context, ref string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	info, err := r.e.InspectContainer(ctx, r.cfg.Container)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return r.recreate(ctx, info, ref, nil)
}

// Stop stops the container; a stopped or missing one is already stopped.
func (r *Runner) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	info, err := r.e.InspectContainer(ctx, r.cfg.Container)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !info.State.Running {
		return nil
	}
	if err := r.e.StopContainer(ctx, info.ID, r.cfg.StopTimeout); err != nil {
		return err
	}
	r.log.Info("cluster peer container stopped", zap.String("container", r.cfg.Container))
	return nil
}

// Status reports the container's state as the runner's status.
func (r *Runner) Status(ctx context.Context) (sidecar.Status, error) {
	info, err := r.e.InspectContainer(ctx, r.cfg.Container)
	if errors.Is(err, ErrNotFound) {
		return sidecar.Status{LastExit: "container " + r.cfg.Container + " does not exist"}, nil
	}
	if err != nil {
		return sidecar.Status{}, err
	}
	st := sidecar.Status{Running: info.State.Running, PID: info.State.Pid, Restarts: info.RestartCount}
	if t, err := time.Parse(time.RFC3339Nano, info.State.StartedAt); err == nil && info.State.Running {
		st.Since = t
	}
	if !info.State.Running && info.State.FinishedAt != "" && !strings.HasPrefix(info.State.FinishedAt, "0001") {
		st.LastExit = fmt.Sprintf("container exited with code %d at %s", info.State.ExitCode, info.State.FinishedAt)
	}
	return st, nil
}

// wantedImage is the image recorded for the current version, or nil.
func (r *Runner) wantedImage() (*imageRecord, error) {
	v, err := r.cfg.Version()
	if err != nil || v == "" {
		return nil, nil //nolint:nilerr // no current version: keep the container's image
	}
	recs, err := r.loadImages()
	if err != nil {
		return nil, err
	}
	if rec, ok := recs[v]; ok {
		return &rec, nil
	}
	return nil, nil
}

func sameImage(a, b string) bool {
	return strings.TrimPrefix(a, "sha256:") == strings.TrimPrefix(b, "sha256:")
}

// recreate replaces the container (info; nil when it is gone) with one of
// the same definition from ref ("" keeps its image) plus extra arguments.
// Both definitions are saved before the old container is removed, so a
// switch cut short is finished by the next Start.
func (r *Runner) recreate(ctx context.Context, info *ContainerInfo, ref string, extra []string) error {
	cur, err := r.loadDef(currentDef)
	if err != nil {
		return err
	}
	prev, err := r.loadDef(previousDef)
	if err != nil {
		return err
	}
	var base *definition
	switch {
	case info == nil && cur == nil:
		return fmt.Errorf("container %s does not exist and no definition of it is saved: create it once by hand", r.cfg.Container)
	case info == nil || (cur != nil && sameImage(info.Image, cur.ImageID)):
		base = cur
	default:
		img, err := r.e.InspectImage(ctx, info.Image)
		if err != nil {
			return fmt.Errorf("reading the image of container %s: %w", r.cfg.Container, err)
		}
		spec, err := definitionOf(info, img)
		if err != nil {
			return err
		}
		base = &definition{Spec: spec, ImageID: info.Image, Ref: info.Image}
	}
	target := base
	if ref != "" {
		img, err := r.e.InspectImage(ctx, ref)
		if err != nil {
			return fmt.Errorf("switching container %s to %s: %w", r.cfg.Container, ref, err)
		}
		if !sameImage(img.ID, base.ImageID) {
			spec := base.Spec
			if prev != nil && sameImage(prev.ImageID, img.ID) {
				spec = prev.Spec // back to the exact old definition
			}
			target = &definition{Spec: spec, ImageID: img.ID, Ref: ref}
			if err := r.saveDef(previousDef, base); err != nil {
				return err
			}
		}
	}
	target.ExtraArgs = slices.Clone(extra)
	if err := r.saveDef(currentDef, target); err != nil {
		return err
	}
	if info != nil {
		if err := r.e.RemoveContainer(ctx, info.ID); err != nil {
			return err
		}
	}
	if err := r.create(ctx, target); err != nil {
		if target == base {
			return err
		}
		// Put the old container back rather than leave the peer with none.
		if rerr := r.saveDef(currentDef, base); rerr == nil {
			rerr = r.create(ctx, base)
			if rerr == nil {
				return fmt.Errorf("switching container %s to %s (the old container was put back): %w", r.cfg.Container, target.Ref, err)
			}
		}
		return fmt.Errorf("switching container %s to %s: %w", r.cfg.Container, target.Ref, err)
	}
	r.log.Info("cluster peer container recreated", zap.String("container", r.cfg.Container),
		zap.String("image", target.Ref), zap.Strings("extra_args", extra))
	return nil
}

func (r *Runner) create(ctx context.Context, d *definition) error {
	spec, err := r.createSpec(ctx, d)
	if err != nil {
		return err
	}
	_, err = r.e.CreateContainer(ctx, r.cfg.Container, spec)
	return err
}

// createSpec is the creation body of d: its image, and its command with the
// extra arguments appended (to the image's default command when it has none).
func (r *Runner) createSpec(ctx context.Context, d *definition) (CreateSpec, error) {
	spec := CreateSpec{}
	for k, v := range d.Spec {
		spec[k] = v
	}
	spec["Image"] = d.ImageID
	if len(d.ExtraArgs) == 0 {
		return spec, nil
	}
	cmd, err := stringsOf(spec["Cmd"])
	if err != nil {
		return nil, err
	}
	if cmd == nil {
		img, err := r.e.InspectImage(ctx, d.ImageID)
		if err != nil {
			return nil, err
		}
		cmd = img.Config.Cmd
	}
	spec["Cmd"] = append(slices.Clone(cmd), d.ExtraArgs...)
	return spec, nil
}

func stringsOf(v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	raw, ok := v.([]any)
	if !ok {
		if s, ok := v.([]string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("container command %v is not a list", v)
	}
	out := make([]string, 0, len(raw))
	for _, x := range raw {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("container command %v is not a list of strings", v)
		}
		out = append(out, s)
	}
	return out, nil
}

func (r *Runner) path(name string) string {
	return filepath.Join(r.cfg.StateDir, r.cfg.Container+"."+name+".json")
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// imageScheme prefixes an artifact that names a container image rather than
// a file (docker mode): `docker-image:ipfs/ipfs-cluster:v1.1.6`, its sha256
// being the image ID. Same value as dockerrunner.ImageScheme.
const imageScheme = "docker-image:"

// ImageStager stages container images in docker mode (dockerrunner.Runner).
//
// Both methods leave the running peer alone. They copy the image's binaries
// into dir, because the offline state commands (export, migration, cleanup)
// are run by upgraded itself on the shared cluster folder, as in the other
// modes; and they record which image runs which version, so that switching
// the binstore's current version is what moves the container to an image.
type ImageStager interface {
	// StageImage checks that image ref has ID sha256hex and holds version
	// (running its --version once), and returns its binaries.
	StageImage(ctx context.Context, ref, sha256hex, version, dir string) (stage.Binaries, error)
	// StageRunning returns the version and binaries of the image the peer's
	// container runs now.
	StageRunning(ctx context.Context, dir string) (string, stage.Binaries, error)
}

// stageImage is stage in docker mode: the plan's one image artifact is
// checked and its binaries installed as the target version; the running
// image is recorded for its version (and its binaries kept if missing).
func (a *Agent) stageImage(ctx context.Context, p *plan.Plan) error {
	var images []plan.Artifact
	for _, art := range p.Artifacts {
		if strings.HasPrefix(art.Source, imageScheme) {
			images = append(images, art)
		}
	}
	if len(images) != 1 {
		return fmt.Errorf("the peer runs in a container: the plan needs exactly one artifact %sIMAGE:TAG with the image ID as its sha256, it has %d",
			imageScheme, len(images))
	}
	dir := a.stagingDir(p.ID)
	// The running image is recorded for its version every time, so that a
	// rollback to that version brings this very image back.
	v, bins, err := a.cfg.Images.StageRunning(ctx, filepath.Join(dir, "running"))
	if err != nil {
		return fmt.Errorf("checking the running peer's image: %w", err)
	}
	if !a.cfg.Bins.Has(v) {
		if err := a.cfg.Bins.Install(v, bins); err != nil {
			return fmt.Errorf("installing the running version %s: %w", v, err)
		}
		a.log.Info("running image's binaries kept for offline state commands", zap.String("plan", p.ID), zap.String("version", v))
	}
	if _, err := a.cfg.Bins.Current(); errors.Is(err, binstore.ErrNotLinked) {
		if err := a.cfg.Bins.Activate(v); err != nil {
			return fmt.Errorf("recording %s as the running version: %w", v, err)
		}
	}
	ref := strings.TrimPrefix(images[0].Source, imageScheme)
	bins, err = a.cfg.Images.StageImage(ctx, ref, images[0].SHA256, p.Version, filepath.Join(dir, "image"))
	if err != nil {
		return fmt.Errorf("staging image %s: %w", ref, err)
	}
	if err := a.cfg.Bins.Install(p.Version, bins); err != nil {
		return fmt.Errorf("installing version %s: %w", p.Version, err)
	}
	a.log.Info("target image checked", zap.String("plan", p.ID), zap.String("image", ref), zap.String("version", p.Version))
	return nil
}

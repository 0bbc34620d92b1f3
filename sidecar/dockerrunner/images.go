package dockerrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// ImageScheme prefixes an announcement's artifact that names an image:
// `docker-image:ipfs/ipfs-cluster:v1.1.6`, its sha256 being the image ID.
const ImageScheme = "docker-image:"

// imageRecord says which image runs one version.
type imageRecord struct {
	Ref string `json:"ref"`
	ID  string `json:"id"`
}

func (r *Runner) loadImages() (map[string]imageRecord, error) {
	recs := map[string]imageRecord{}
	b, err := os.ReadFile(r.path(imagesFile))
	if errors.Is(err, os.ErrNotExist) {
		return recs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the image of every version: %w", err)
	}
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("reading the image of every version: %w", err)
	}
	return recs, nil
}

func (r *Runner) recordImage(version string, rec imageRecord) error {
	recs, err := r.loadImages()
	if err != nil {
		return err
	}
	recs[version] = rec
	if err := writeJSONAtomic(r.path(imagesFile), recs); err != nil {
		return fmt.Errorf("recording image %s for version %s: %w", rec.Ref, version, err)
	}
	return nil
}

// StageImage checks that image ref is present (pulling it when missing),
// that its ID is sha256hex, and that its service binary says it is version,
// by running it once; then copies its binaries into dir, for the offline
// state commands upgraded runs itself, and records ref as version's image.
// Nothing here touches the running peer.
func (r *Runner) StageImage(ctx context.Context, ref, sha256hex, version, dir string) (stage.Binaries, error) {
	img, err := r.e.InspectImage(ctx, ref)
	if errors.Is(err, ErrNotFound) {
		r.log.Info("image not on this host; pulling it", zap.String("image", ref))
		if perr := r.e.Pull(ctx, ref); perr != nil {
			return stage.Binaries{}, fmt.Errorf("image %s is not on this host and could not be pulled: %w", ref, perr)
		}
		img, err = r.e.InspectImage(ctx, ref)
	}
	if err != nil {
		return stage.Binaries{}, err
	}
	if got := strings.TrimPrefix(img.ID, "sha256:"); !strings.EqualFold(got, sha256hex) {
		return stage.Binaries{}, fmt.Errorf("image %s has ID sha256:%s, the announcement wants sha256:%s", ref, got, sha256hex)
	}
	got, bins, err := r.inspectBinaries(ctx, img.ID, dir)
	if err != nil {
		return stage.Binaries{}, fmt.Errorf("checking image %s: %w", ref, err)
	}
	if want, _ := cluster.NormalizeVersion(version); got != want {
		return stage.Binaries{}, fmt.Errorf("image %s holds ipfs-cluster-service %s, not the target %s", ref, got, version)
	}
	if err := r.recordImage(version, imageRecord{Ref: ref, ID: img.ID}); err != nil {
		return stage.Binaries{}, err
	}
	return bins, nil
}

// StageRunning does for the image the container runs now what StageImage
// does for a target, and returns the version it holds.
func (r *Runner) StageRunning(ctx context.Context, dir string) (string, stage.Binaries, error) {
	info, err := r.e.InspectContainer(ctx, r.cfg.Container)
	if err != nil {
		return "", stage.Binaries{}, err
	}
	v, bins, err := r.inspectBinaries(ctx, info.Image, dir)
	if err != nil {
		return "", stage.Binaries{}, fmt.Errorf("checking the image of container %s: %w", r.cfg.Container, err)
	}
	var ref string
	if err := json.Unmarshal(info.Config["Image"], &ref); err != nil || ref == "" {
		ref = info.Image
	}
	if err := r.recordImage(v, imageRecord{Ref: ref, ID: info.Image}); err != nil {
		return "", stage.Binaries{}, err
	}
	return v, bins, nil
}

var versionRe = regexp.MustCompile(`(?m)\bversion\s+(v?[0-9]+(?:\.[0-9]+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+\S*)?)`)

// inspectBinaries runs `ipfs-cluster-service --version` of image in a
// throw-away container without network, and copies the binaries out of it.
func (r *Runner) inspectBinaries(ctx context.Context, image, dir string) (string, stage.Binaries, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	spec := CreateSpec{"Image": image, "Entrypoint": []string{r.cfg.ServicePath}, "Cmd": []string{"--version"},
		"Labels":     map[string]string{"upgraded.role": "version-check"},
		"HostConfig": map[string]any{"NetworkMode": "none"}}
	id, err := r.e.CreateContainer(ctx, "", spec)
	if err != nil {
		return "", stage.Binaries{}, err
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		if err := r.e.RemoveContainer(rctx, id); err != nil {
			r.log.Warn("removing the version-check container", zap.String("id", id), zap.Error(err))
		}
	}()
	if err := r.e.StartContainer(ctx, id); err != nil {
		return "", stage.Binaries{}, fmt.Errorf("running %s --version: %w", r.cfg.ServicePath, err)
	}
	code, err := r.e.WaitContainer(ctx, id)
	if err != nil {
		return "", stage.Binaries{}, err
	}
	out, err := r.e.Logs(ctx, id)
	if err != nil {
		return "", stage.Binaries{}, err
	}
	if code != 0 {
		return "", stage.Binaries{}, fmt.Errorf("%s --version exited with code %d: %s", r.cfg.ServicePath, code, strings.TrimSpace(out))
	}
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return "", stage.Binaries{}, fmt.Errorf("no version in the output of %s --version: %q", r.cfg.ServicePath, strings.TrimSpace(out))
	}
	v, err := cluster.NormalizeVersion(m[1])
	if err != nil {
		return "", stage.Binaries{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", stage.Binaries{}, fmt.Errorf("creating staging folder: %w", err)
	}
	bins := stage.Binaries{Service: filepath.Join(dir, stage.ServiceName)}
	if err := r.e.CopyFile(ctx, id, r.cfg.ServicePath, bins.Service); err != nil {
		return "", stage.Binaries{}, err
	}
	ctl := filepath.Join(dir, stage.CtlName)
	if err := r.e.CopyFile(ctx, id, r.cfg.CtlPath, ctl); err == nil {
		bins.Ctl = ctl
	} else if !errors.Is(err, ErrNotFound) {
		return "", stage.Binaries{}, err
	}
	return v, bins, nil
}

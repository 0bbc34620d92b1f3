package agent

import (
	"context"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// ArtifactFetcher brings one artifact of a plan into dir, its sha256
// checked, and returns its path (coordination/artifacts.Sharer: one host
// fetches from the source, the others from their peers).
type ArtifactFetcher interface {
	FetchArtifact(ctx context.Context, p *plan.Plan, a plan.Artifact, dir string) (string, error)
}

// fetchArtifact uses the configured fetcher, or fetches from the source here.
func (a *Agent) fetchArtifact(ctx context.Context, p *plan.Plan, art plan.Artifact, dir string) (string, error) {
	if a.cfg.Artifacts != nil {
		return a.cfg.Artifacts.FetchArtifact(ctx, p, art, dir)
	}
	return stage.Fetch(ctx, stage.Artifact{Source: art.Source, SHA256: art.SHA256}, dir, a.cfg.FetchOptions...)
}

package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// windowBackup takes a live backup from the new version before a rollback
// stops it, when it answers: pins added while it served would otherwise be
// lost with the restore of the old state. It returns the backup id, or "".
func (a *Agent) windowBackup(ctx context.Context, p *plan.Plan) string {
	id, err := a.cfg.API.ID(ctx)
	if err != nil || plan.CompareVersions(id.Version, p.Version) != 0 {
		return ""
	}
	m, err := a.liveBackup(ctx, p.ID, p.Version, "before rollback")
	if err != nil {
		a.log.Warn("could not back up the new version's pinset before the rollback; pins added since the switch may need pinning again",
			zap.String("plan", p.ID), zap.Error(err))
		return ""
	}
	return m.ID
}

// repinWindow pins again, on the restored old version, every pin of the
// pre-rollback backup that the peer does not hold. It returns how many.
func (a *Agent) repinWindow(ctx context.Context, planID, backupID string) (int, error) {
	have := map[string]bool{}
	if err := a.cfg.API.StreamPins(ctx, func(cid string, _ json.RawMessage) error {
		have[cid] = true
		return nil
	}); err != nil {
		return 0, fmt.Errorf("reading the restored pinset: %w", err)
	}
	tmp := filepath.Join(a.stagingDir(planID), "rollback-window.ndjson")
	if err := os.MkdirAll(filepath.Dir(tmp), 0o700); err != nil {
		return 0, err
	}
	if err := a.cfg.Backups.WriteExportTo(ctx, backupID, tmp); err != nil {
		return 0, fmt.Errorf("reading backup %s: %w", backupID, err)
	}
	defer os.Remove(tmp)
	f, err := os.Open(tmp)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		cid, name, ok := pinCIDAndName(sc.Bytes())
		if !ok || have[cid] {
			continue
		}
		if err := a.cfg.API.Pin(ctx, cid, name); err != nil {
			return n, fmt.Errorf("pinning %s: %w", cid, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("reading backup %s: %w", backupID, err)
	}
	if n > 0 {
		a.log.Info("pinned again what the new version had acquired before the rollback", zap.String("plan", planID), zap.Int("pins", n))
	}
	return n, nil
}

// pinCIDAndName reads a pin object of either release form (cid as a string,
// or 0.x's {"/": "..."}).
func pinCIDAndName(line []byte) (string, string, bool) {
	var obj struct {
		CID  json.RawMessage `json:"cid"`
		Name string          `json:"name"`
	}
	if json.Unmarshal(line, &obj) != nil {
		return "", "", false
	}
	var s string
	if json.Unmarshal(obj.CID, &s) == nil && s != "" {
		return s, obj.Name, true
	}
	var legacy struct {
		Slash string `json:"/"`
	}
	if json.Unmarshal(obj.CID, &legacy) == nil && legacy.Slash != "" {
		return legacy.Slash, obj.Name, true
	}
	return "", "", false
}

package daemon

// Reading a copy of a crdt datastore with a version that can read it. A datastore folder is only readable by the
// releases that use its format (0.14.x cannot read the pebble/ folder of 1.x and starts empty next to it), so a
// folder copy is not put back in place under whatever version is installed now. Instead the copy is restored into a
// scratch config folder, exported offline (`state export`) by the version that wrote it (the manifest records it;
// the binary store keeps the versions a host ran), and the export, which every release reads, is what the
// installed version imports. Its pin count is then known and checked like any export's.
//
// Raft folder copies are still put back in place: an offline export of raft state reads only the last snapshot
// (reference item 2) and would silently drop the pins of the log after it; a peer started on the folder replays
// its log.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/statebackup"
)

// readerExportTimeout bounds one offline export of a folder copy.
const readerExportTimeout = 10 * time.Minute

// isRaftCopy tells a copy of raft/ (or raft.old.N, raft.replaced-...) from a crdt datastore copy.
func isRaftCopy(m *statebackup.Manifest) bool {
	return m.Folder == "raft" || strings.HasPrefix(m.Folder, "raft.")
}

// readerVersion is the installed version that reads a copy made by version wrote: that version when the binary
// store still has it, the current one otherwise (and the log says so).
func (d *Daemon) readerVersion(bins *binstore.Store, wrote string) (string, error) {
	current, err := bins.Current()
	if err != nil {
		return "", fmt.Errorf("reading the installed version: %w", err)
	}
	if wrote == "" || wrote == current || bins.Has(wrote) {
		return firstNonEmpty(wrote, current), nil
	}
	d.log.Warn("the version that wrote the state-folder copy is not installed here; reading it with the current one",
		zap.String("wrote", wrote), zap.String("current", current))
	return current, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// exportFolderCopy reads the crdt datastore copy m with the version that wrote it and stores the result as a
// verified offline export: the backup the rebuild imports. Nothing of the peer's own folders is touched.
func (d *Daemon) exportFolderCopy(ctx context.Context, store *statebackup.Store, m *statebackup.Manifest,
	recovery string) (*statebackup.Manifest, error) {
	bins, err := binstore.Open(d.cfg.BinDir())
	if err != nil {
		return nil, fmt.Errorf("opening the binary store: %w", err)
	}
	version, err := d.readerVersion(bins, m.ClusterVersion)
	if err != nil {
		return nil, err
	}
	scratch := filepath.Join(d.cfg.StagingDir(), "recover", m.ID+".read")
	defer os.RemoveAll(scratch)
	if err := cluster.ScratchConfig(d.cfg.ClusterConfig, scratch); err != nil {
		return nil, err
	}
	folder := filepath.Join(scratch, plainFolderName(m.Folder))
	if err := store.RestoreFolder(ctx, m.ID, folder); err != nil {
		return nil, fmt.Errorf("unpacking state-folder copy %s to read it: %w", m.ID, err)
	}
	out := filepath.Join(scratch, "export.ndjson")
	ectx, cancel := context.WithTimeout(ctx, readerExportTimeout)
	err = (cluster.Binary{Path: bins.ServicePathFor(version)}).StateExport(ectx, scratch, out)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("exporting state-folder copy %s with version %s: %w", m.ID, version, err)
	}
	n, err := statebackup.CountExport(out)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("version %s read no pin from state-folder copy %s: it is not a copy to rebuild from", version, m.ID)
	}
	e, err := store.AddExport(ctx, out, statebackup.KindOfflineExport, statebackup.Meta{ClusterVersion: version,
		PeerID: m.PeerID, Consensus: m.Consensus, Note: fmt.Sprintf("recovery %s: state-folder copy %s read with version %s",
			recovery, m.ID, version)})
	if err != nil {
		return nil, err
	}
	d.log.Info("state-folder copy read with the version that wrote it", zap.String("recovery", recovery),
		zap.String("copy", m.ID), zap.String("version", version), zap.Int("pins", e.Pins), zap.String("export", e.ID))
	return store.Verify(ctx, e.ID)
}

// plainFolderName is the name a copied folder had in use: pebble.replaced-... was pebble.
func plainFolderName(name string) string {
	if i := strings.Index(name, ".replaced-"); i > 0 {
		return name[:i]
	}
	return name
}

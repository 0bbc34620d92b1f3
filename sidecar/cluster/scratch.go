package cluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// ScratchConfig makes dir a config folder that offline state commands
// (`state export`) accept for state that is not in place: the peer's
// service.json and identity.json from clusterDir, nothing else. Whatever dir
// held is removed first; the caller puts the state folders in and removes
// dir when done.
func ScratchConfig(clusterDir, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clearing %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, f := range []string{"service.json", "identity.json"} {
		b, err := os.ReadFile(filepath.Join(clusterDir, f))
		if err != nil {
			return fmt.Errorf("copying the peer's %s to read a state-folder copy: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return fmt.Errorf("copying the peer's %s to read a state-folder copy: %w", f, err)
		}
	}
	return nil
}

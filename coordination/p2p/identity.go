package p2p

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/upgraded/upgraded/coordination/envelope"
)

// LoadOrCreateIdentity returns the daemon's private key from path, creating a
// new Ed25519 key (mode 0600) when the file does not exist. The identity must
// persist: peers, raft membership and operators' trust lists name a daemon by
// the peer ID derived from it. The file format is envelope's key file, so the
// same key can sign announcements.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	priv, err := envelope.LoadKeyFile(path)
	if err == nil {
		return priv, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("loading identity: %w", err)
	}
	if _, err := envelope.GenerateKeyFile(path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating identity: %w", err)
	}
	// Read back what is on disk: if another process created the file first,
	// its key wins and both use the same identity.
	priv, err = envelope.LoadKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading new identity: %w", err)
	}
	return priv, nil
}

package envelope

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Key files hold one libp2p-marshalled private key as base64 text, the same
// encoding IPFS Cluster uses in identity.json, so they survive copy and paste.
// Both operator keys and the daemons' identities use this format, which lets
// `announce` sign with a daemon's identity when no --key is given.

// GenerateKeyFile creates a new Ed25519 key at path (mode 0600) and returns its
// peer ID. It refuses to overwrite an existing file: losing a key that others
// trust cannot be undone.
func GenerateKeyFile(path string) (peer.ID, error) {
	priv, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return "", fmt.Errorf("generating key for %s: %w", path, err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("deriving peer ID for %s: %w", path, err)
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("encoding key for %s: %w", path, err)
	}
	text := base64.StdEncoding.EncodeToString(raw) + "\n"
	if err := writeNew(path, []byte(text)); err != nil {
		return "", err
	}
	return id, nil
}

// writeNew writes data to path only if path does not exist. The content is
// written and synced under a temporary name first and then hard-linked into
// place, so a crash never leaves a truncated key behind and a concurrent
// writer cannot be overwritten.
func writeNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating folder for key %s: %w", path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("writing key %s: %w", path, os.ErrExist)
	}
	tmp, err := os.CreateTemp(dir, ".key-*.tmp")
	if err != nil {
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	return nil
}

// LoadKeyFile reads a private key written by GenerateKeyFile.
func LoadKeyFile(path string) (crypto.PrivKey, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", path, err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(text)))
	if err != nil {
		return nil, fmt.Errorf("reading key %s: not base64 text: %w", path, err)
	}
	priv, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", path, err)
	}
	return priv, nil
}

package clustersim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Identity is identity.json: a real libp2p Ed25519 key, so peer IDs look
// like the real ones (12D3KooW...).
type Identity struct {
	ID         string `json:"id"`
	PrivateKey string `json:"private_key"`
}

// NewIdentity generates a fresh Ed25519 identity.
func NewIdentity() (Identity, error) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return Identity{}, fmt.Errorf("generating key: %w", err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return Identity{}, fmt.Errorf("deriving peer ID: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return Identity{}, fmt.Errorf("encoding key: %w", err)
	}
	return Identity{ID: id.String(), PrivateKey: base64.StdEncoding.EncodeToString(raw)}, nil
}

// LoadIdentity reads dir/identity.json.
func LoadIdentity(dir string) (Identity, error) {
	var id Identity
	b, err := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err != nil {
		return id, fmt.Errorf("reading identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("parsing identity.json: %w", err)
	}
	if id.ID == "" {
		return id, fmt.Errorf("identity.json has no id")
	}
	return id, nil
}

// Addr is the part of a multiaddr the simulator needs:
// /ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT[/p2p/ID].
type Addr struct {
	Host, Port, PeerID string
}

// ParseAddr parses a TCP multiaddr, optionally ending in /p2p/ID (or /ipfs/ID).
func ParseAddr(ma string) (Addr, error) {
	parts := strings.Split(strings.TrimSpace(ma), "/")
	var a Addr
	if len(parts) < 5 || parts[0] != "" {
		return a, fmt.Errorf("invalid multiaddr %q", ma)
	}
	switch parts[1] {
	case "ip4", "ip6", "dns", "dns4", "dns6":
		a.Host = parts[2]
	default:
		return a, fmt.Errorf("unsupported multiaddr %q", ma)
	}
	if parts[3] != "tcp" || parts[4] == "" {
		return a, fmt.Errorf("multiaddr %q has no tcp port", ma)
	}
	a.Port = parts[4]
	rest := parts[5:]
	if len(rest) >= 2 && (rest[0] == "p2p" || rest[0] == "ipfs") {
		a.PeerID = rest[1]
	}
	if a.Host == "0.0.0.0" {
		a.Host = "127.0.0.1"
	}
	return a, nil
}

// HostPort is host:port for net.Dial and URLs.
func (a Addr) HostPort() string {
	if strings.Contains(a.Host, ":") {
		return "[" + a.Host + "]:" + a.Port
	}
	return a.Host + ":" + a.Port
}

// Multiaddr renders the address without the peer part.
func (a Addr) Multiaddr() string {
	proto := "ip4"
	if strings.Contains(a.Host, ":") {
		proto = "ip6"
	}
	return "/" + proto + "/" + a.Host + "/tcp/" + a.Port
}

// WithPeer renders the full /p2p address.
func (a Addr) WithPeer(id string) string {
	return a.Multiaddr() + "/p2p/" + id
}

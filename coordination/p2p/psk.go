package p2p

import (
	"crypto/sha256"
	"fmt"

	"github.com/libp2p/go-libp2p/core/pnet"
)

// SecretSize is the length of the IPFS Cluster secret once hex-decoded.
const SecretSize = 32

// pskDomain separates the daemons' network key from the cluster secret.
const pskDomain = "upgraded/pnet/v1\x00"

// DerivePSK turns the IPFS Cluster secret into the pre-shared key of the
// daemons' private network.
//
// Keying the swarm by the cluster secret means exactly the hosts trusted with
// the cluster can reach a daemon, with no extra secret to distribute. The key
// is derived rather than used as is so that this swarm is not the cluster's
// own: a cluster peer and a daemon on the same host can never join each
// other's networks by mistake (their protocols would meet on the same
// transport), and knowing our PSK reveals nothing usable against the cluster.
func DerivePSK(secret []byte) (pnet.PSK, error) {
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("cluster secret is %d bytes, want %d", len(secret), SecretSize)
	}
	h := sha256.New()
	h.Write([]byte(pskDomain))
	h.Write(secret)
	return pnet.PSK(h.Sum(nil)), nil
}

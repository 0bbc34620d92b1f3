// Package systemd holds the units shipped in the .deb, embedded so that
// `upgraded service install` writes the very same hardened unit.
package systemd

import _ "embed"

//go:embed upgraded.service
var upgraded string

//go:embed ipfs-cluster.service
var cluster string

// Upgraded is systemd/upgraded.service as shipped.
func Upgraded() string { return upgraded }

// Cluster is systemd/ipfs-cluster.service as shipped.
func Cluster() string { return cluster }

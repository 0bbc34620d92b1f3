#!/bin/sh
# Users before files: the units name them. upgraded joins group ipfs-cluster
# to read and write the peer's folder.
set -e
if ! getent group ipfs-cluster >/dev/null; then
	addgroup --system --quiet ipfs-cluster
fi
if ! getent passwd ipfs-cluster >/dev/null; then
	adduser --system --quiet --ingroup ipfs-cluster --home /var/lib/ipfs-cluster \
		--no-create-home --shell /usr/sbin/nologin ipfs-cluster
fi
if ! getent group upgraded >/dev/null; then
	addgroup --system --quiet upgraded
fi
if ! getent passwd upgraded >/dev/null; then
	adduser --system --quiet --ingroup upgraded --home /var/lib/upgraded \
		--no-create-home --shell /usr/sbin/nologin upgraded
fi
adduser --quiet upgraded ipfs-cluster

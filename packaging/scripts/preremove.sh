#!/bin/sh
# Stop upgraded on removal; the cluster peer keeps running on an upgrade of
# the package and stops only when the package goes away.
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl stop upgraded.service >/dev/null 2>&1 || true
	systemctl stop ipfs-cluster.service >/dev/null 2>&1 || true
	systemctl disable upgraded.service ipfs-cluster.service >/dev/null 2>&1 || true
fi

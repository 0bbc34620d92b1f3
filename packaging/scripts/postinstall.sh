#!/bin/sh
# The default config folders. /var/lib/upgraded belongs to upgraded, with
# group ipfs-cluster (setgid, so what upgraded creates inherits it) for the
# peer to run bin/current; /var/lib/ipfs-cluster is shared by both through
# group ipfs-cluster. Both units are enabled; they start once configured
# (ConditionPathExists), so an unconfigured host stays quiet.
set -e
if [ "$1" = configure ] || [ "$1" = 1 ] || [ "$1" = 2 ]; then
	install -d -o upgraded -g ipfs-cluster -m 2750 /var/lib/upgraded
	install -d -o ipfs-cluster -g ipfs-cluster -m 2770 /var/lib/ipfs-cluster
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
	systemctl enable ipfs-cluster.service upgraded.service >/dev/null || true
	# polkitd reads new rules itself; a restart only makes it immediate.
	systemctl try-restart polkit.service >/dev/null 2>&1 || true
	if [ -n "$2" ]; then
		systemctl try-restart upgraded.service >/dev/null || true
	fi
fi

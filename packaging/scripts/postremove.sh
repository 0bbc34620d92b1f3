#!/bin/sh
# On purge: remove upgraded's working files (binaries, raft, journal,
# staging, sockets, logs) and both users; keep the configuration
# (upgraded.json, identity.key, the cluster peer's folder) and the backups,
# handed to root so that no file is left owned by a removed user.
set -e
if [ "$1" = purge ]; then
	if [ -d /var/lib/upgraded ]; then
		for f in /var/lib/upgraded/* /var/lib/upgraded/.[!.]*; do
			[ -e "$f" ] || [ -L "$f" ] || continue
			case "${f##*/}" in
			upgraded.json | identity.key | backups) ;;
			*) rm -rf "$f" ;;
			esac
		done
		chown -R root:root /var/lib/upgraded
		chmod g-s /var/lib/upgraded
		rmdir /var/lib/upgraded 2>/dev/null || true
	fi
	if [ -d /var/lib/ipfs-cluster ]; then
		chown -R root:root /var/lib/ipfs-cluster
		chmod g-s /var/lib/ipfs-cluster
		rmdir /var/lib/ipfs-cluster 2>/dev/null || true
	fi
	rm -f /etc/systemd/system/upgraded.service
	for u in upgraded ipfs-cluster; do
		if getent passwd "$u" >/dev/null; then
			deluser --quiet --system "$u" >/dev/null || true
		fi
		if getent group "$u" >/dev/null; then
			delgroup --quiet --system "$u" >/dev/null || true
		fi
	done
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi

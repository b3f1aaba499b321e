#!/usr/bin/env bash
# make test-fresh: the README's `make test` on a pristine Debian 12 root.
#
# A developer machine (or CI's) keeps what earlier runs left: packages installed by hand, tracefs
# and bpffs mounted, pip caches, kernels in /boot. Any of them can hide an install step that a
# new machine lacks. This script proves the README's commands without them:
#
#   1. a minimal Debian 12 root is bootstrapped from the Debian archive the host's apt uses
#      (debootstrap --variant=minbase, plus `make`: the command the README starts with). Only
#      that pristine base is cached, as a tarball, and only if it is younger than 7 days;
#   2. a copy of this checkout (the files git knows, as they are in the work tree) goes to /src;
#   3. in a new mount namespace the root becomes a mount of its own (as a container's root is)
#      and gets its own fresh /proc, /sys (nothing mounted under it: no tracefs, no bpffs, no
#      securityfs), /dev, /run, /tmp and a cgroup2 mount where the host has one (hybrid hosts:
#      /sys/fs/cgroup/unified);
#   4. `make test` runs there with a clean environment, and installs everything else itself:
#      system packages, the venv from PyPI, the VM kernels, QEMU, virtme-ng and busybox.
#      What the root takes from the host is the machine's way to the package registries only:
#      its proxy and CA-bundle variables (this workplace reaches the registries through a
#      proxy with its own CA) and the certificate files they name; never a package or a cache.
#
# The exit code is make test's. The root is deleted afterwards (KEEP_ROOT=1 keeps it).
# Environment: FRESH_SUITE (bookworm), FRESH_CACHE (/var/cache/corral/test-fresh),
# FRESH_TARGET (the make target to run, default `test`), FRESH_MIRROR (default: the host's),
# FRESH_LOGS (where the guests' logs of a failed run are copied: /var/tmp/corral-fresh-logs).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${FRESH_SUITE:-bookworm}
CACHE=${FRESH_CACHE:-/var/cache/corral/test-fresh}
TARGET=${FRESH_TARGET:-test}
LOGS=${FRESH_LOGS:-/var/tmp/corral-fresh-logs}  # the VM logs of a failed run are kept here
ARCH=$(dpkg --print-architecture)
BASE="$CACHE/$SUITE-minbase-$ARCH-v2.tar"  # v2: with /etc/hosts
MAX_AGE_DAYS=7

say() { printf '== test-fresh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (it bootstraps a root file system and mounts into it)"
command -v unshare >/dev/null || die "unshare (util-linux) is missing"

# The Debian archive the host's apt already uses (deb822 or one-line format), else debootstrap's
# own default. Only archives for the `debian` distribution are taken (not security, not others).
host_mirror() {
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")
		[ -n "$uri" ] && { echo "${uri%/}"; return; }
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -e "$f" ] || continue
		uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) { print $i; exit } }' "$f")
		[ -n "$uri" ] && { echo "${uri%/}"; return; }
	done
}
MIRROR=${FRESH_MIRROR:-$(host_mirror)}

need_host_pkg() {
	dpkg -s "$1" >/dev/null 2>&1 && return
	say "installing $1 on the host (to build the pristine root)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

bootstrap_base() {
	if [ -f "$BASE" ] && [ -n "$(find "$BASE" -mtime -"$MAX_AGE_DAYS")" ]; then
		say "pristine base: $BASE (cached, $(date -r "$BASE" +%F))"
		return
	fi
	need_host_pkg debootstrap
	local tmp
	tmp=$(mktemp -d /var/tmp/corral-base.XXXXXX)
	say "bootstrapping Debian $SUITE (minbase) from ${MIRROR:-the default mirror of debootstrap}"
	local t0=$SECONDS
	if ! debootstrap --variant=minbase --include=make "$SUITE" "$tmp" ${MIRROR:+"$MIRROR"} \
		>"$tmp.log" 2>&1; then
		tail -20 "$tmp.log" >&2
		rm -rf "$tmp" "$tmp.log"
		die "debootstrap failed (log above)"
	fi
	# what the Debian installer writes and debootstrap does not: names for loopback
	printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$tmp/etc/hosts"
	echo corral-fresh >"$tmp/etc/hostname"
	# the archive's updates and security suites, as a Debian install has them
	if [ -n "$MIRROR" ]; then
		cat >"$tmp/etc/apt/sources.list" <<-EOF
			deb $MIRROR $SUITE main
			deb $MIRROR $SUITE-updates main
			deb ${MIRROR%/debian}/debian-security $SUITE-security main
		EOF
	fi
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
	mkdir -p "$CACHE"
	tar -C "$tmp" -cf "$BASE.part" . && mv "$BASE.part" "$BASE"
	rm -rf "$tmp" "$tmp.log"
	say "pristine base bootstrapped in $((SECONDS - t0)) s, cached at $BASE"
}

# A clone of this checkout (its .git, as `git clone` makes it), with the work tree's files that
# git knows (tracked and new, not ignored) laid over it: uncommitted edits are tested too, and
# .venv, build outputs and VM logs stay behind.
copy_checkout() {
	local dest=$1
	git clone -q --no-hardlinks "$REPO" "$dest"
	(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 -r sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -C "$dest" -xf -
	git -C "$REPO" rev-parse --short HEAD >"$dest/.git/fresh-commit"
}

# The host's proxy and CA-bundle variables, one NAME=VALUE a line. The files they name are
# copied to /usr/local/share/registry-ca/ in the root and the values point there: Debian's
# ca-certificates, once a package pulls it in, rewrites /etc/ssl/certs without the proxy's CA.
registry_env() {
	local root=$1 name value dir=/usr/local/share/registry-ca
	while IFS='=' read -r name value; do
		case "$name" in
		http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY | \
			SSL_CERT_FILE | REQUESTS_CA_BUNDLE | CURL_CA_BUNDLE | PIP_CERT | \
			PIP_DEFAULT_TIMEOUT | NODE_EXTRA_CA_CERTS | GIT_SSL_CAINFO) ;;
		*) continue ;;
		esac
		if [ -f "$value" ]; then
			mkdir -p "$root$dir"
			cp -L "$value" "$root$dir/$(basename "$value")"
			value=$dir/$(basename "$value")
		fi
		printf '%s=%s\n' "$name" "$value"
	done < <(env)
}

# Mounts the fresh pseudo file systems into the root. Runs inside the new mount namespace.
enter_root() {
	local root=$1 cg2
	mount --make-rprivate /
	# the root is a mount of its own, as a container's is: "/" inside it is a mount point, so
	# mount(2) on "/" (say, making it private in a new mount namespace) works as in a pod
	mount --bind "$root" "$root"
	mount -t proc proc "$root/proc"
	mount -t sysfs sysfs "$root/sys"
	cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
	[ -n "$cg2" ] || { echo "no cgroup2 on the host: corral needs cgroup v2" >&2; exit 2; }
	if [ "$cg2" != /sys/fs/cgroup ]; then
		mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
		mkdir -p "$root$cg2"
	fi
	mount -t cgroup2 cgroup2 "$root$cg2"
	mount -t devtmpfs devtmpfs "$root/dev"
	mkdir -p "$root/dev/pts" "$root/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
	mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
	mount -t tmpfs -o mode=755 tmpfs "$root/run"
	mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	local -a netenv=()
	mapfile -t netenv < <(registry_env "$root")
	exec chroot "$root" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" "${netenv[@]}" \
		/bin/bash -c "cd /src && exec make $TARGET"
}

main() {
	if [ "${1:-}" = --enter ]; then
		enter_root "$2"
	fi
	need_host_pkg debootstrap
	bootstrap_base
	local root t0=$SECONDS rc=0
	root=$(mktemp -d /var/tmp/corral-fresh.XXXXXX)
	# shellcheck disable=SC2064
	[ -n "${KEEP_ROOT:-}" ] || trap "rm -rf --one-file-system '$root'" EXIT
	tar -C "$root" -xf "$BASE"
	copy_checkout "$root/src"
	say "root $root: Debian $SUITE minbase + make, checkout $(cat "$root/src/.git/fresh-commit") at /src"
	say "running \`make $TARGET\` in it (fresh /proc, /sys, /dev, cgroup2; no tracefs, no bpffs)"
	unshare --mount --propagation private "$0" --enter "$root" || rc=$?
	if [ "$rc" -ne 0 ] && [ -d "$root/src/.vm-results" ]; then
		rm -rf "$LOGS" && mkdir -p "$LOGS" && cp -r "$root/src/.vm-results/." "$LOGS/"
		say "the VM logs of that run: $LOGS"
	fi
	say "make $TARGET in the pristine root: rc=$rc after $((SECONDS - t0)) s"
	return "$rc"
}

main "$@"

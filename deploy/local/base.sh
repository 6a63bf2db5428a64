#!/usr/bin/env bash
# Build orderly-local/debian:bookworm, the base of every local image: a
# minimal Debian rootfs from debootstrap, from the Debian mirror this
# machine's apt uses, imported with `docker import` (no registry needed).
# The rootfs tarball is kept in CACHE_DIR, so later runs only import it.
# The host's own trust anchors (/usr/local/share/ca-certificates, e.g. an
# egress proxy's CA) go into a layer on top, so that builds reach the Go
# module proxy as the host does; they are not kept in the cached tarball.
set -euo pipefail

image=${BASE_IMAGE:-orderly-local/debian:bookworm}
cache=${CACHE_DIR:-/var/cache/orderly-compose}
docker=${DOCKER:-docker}
tarball=$cache/debian-bookworm.tar

if "$docker" image inspect "$image" >/dev/null 2>&1; then
	exit 0
fi

# The mirror: the first URIs of a deb822 source, else the first deb line.
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*debian\/\{0,1\}\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
if [[ -z $mirror ]]; then
	mirror=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
fi
mirror=${mirror:-http://deb.debian.org/debian}

if [[ ! -s $tarball ]]; then
	mkdir -p "$cache"
	root=$(mktemp -d "$cache/rootfs.XXXXXX")
	trap 'rm -rf "$root"' EXIT
	echo "==> debootstrap bookworm from $mirror"
	debootstrap --variant=minbase --include=ca-certificates,wget bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
	# Package installs in image builds must not try to start services,
	# and need no documentation.
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod +x "$root/usr/sbin/policy-rc.d"
	printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' >"$root/etc/dpkg/dpkg.cfg.d/01-nodoc"
	# The same suites as the host (updates and security), when it has them.
	if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
		rm -f "$root/etc/apt/sources.list"
		cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
	fi
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
	tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
echo "==> docker import $image"
"$docker" import "$tarball" "$image-rootfs" >/dev/null
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp /usr/local/share/ca-certificates/*.crt "$ctx/" 2>/dev/null || true
printf 'FROM %s\nCOPY . /usr/local/share/ca-certificates/\nRUN update-ca-certificates >/dev/null\n' "$image-rootfs" |
	"$docker" build -q --network host -t "$image" -f - "$ctx" >/dev/null
"$docker" rmi "$image-rootfs" >/dev/null

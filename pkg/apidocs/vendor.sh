#!/usr/bin/env bash
# vendor.sh fetches the pinned swagger-ui-dist from the npm registry into
# swagger-ui/, the files /docs embeds (make vendor-apidocs). The tarball must
# match both the registry's dist.integrity and the integrity pinned here, so
# a re-published or tampered package fails instead of being vendored; bump
# VERSION and INTEGRITY together (and Version in apidocs.go, which the tests
# compare with the bundle).
set -euo pipefail

VERSION=5.35.0
INTEGRITY=sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
REGISTRY=${NPM_REGISTRY:-https://registry.npmjs.org}
# The bundle (with swagger-ui's own code and its dependencies) and its
# stylesheet; the standalone preset and the source maps are not used.
FILES=(swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)

cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

curl -fsSL "$REGISTRY/swagger-ui-dist/$VERSION" -o "$tmp/meta.json"
registry_integrity=$(jq -r .dist.integrity "$tmp/meta.json")
tarball=$(jq -r .dist.tarball "$tmp/meta.json")
if [[ $registry_integrity != "$INTEGRITY" ]]; then
	echo "vendor.sh: the registry says swagger-ui-dist@$VERSION is $registry_integrity, pinned is $INTEGRITY" >&2
	exit 1
fi

curl -fsSL "$tarball" -o "$tmp/package.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/package.tgz" | base64 -w0)"
if [[ $got != "$INTEGRITY" ]]; then
	echo "vendor.sh: $tarball is $got, want $INTEGRITY" >&2
	exit 1
fi

tar -xzf "$tmp/package.tgz" -C "$tmp" "${FILES[@]/#/package/}"
rm -rf swagger-ui
mkdir swagger-ui
for f in "${FILES[@]}"; do
	cp "$tmp/package/$f" "swagger-ui/$f"
done
echo "vendored swagger-ui-dist@$VERSION into $(pwd)/swagger-ui"

#!/usr/bin/env bash
# Generates Go code from every .proto file under proto/.
#
#   proto/generate.sh          regenerate the committed *.pb.go files in place
#   proto/generate.sh --check  regenerate into a temporary directory and fail if
#                              the committed *.pb.go files differ (stale, missing
#                              or extra)
#
# protoc comes from Debian (installed with apt-get when missing); protoc-gen-go
# is pinned by the `tool` directive in proto/go.mod and built by `go tool`.
# See docs/decisions/0001-protobuf-tooling.md.
set -euo pipefail

cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	PATH=/usr/local/go/bin:$PATH
fi

if ! command -v protoc >/dev/null 2>&1; then
	echo "protoc not found; installing protobuf-compiler with apt-get" >&2
	if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
fi

# `go tool -n` builds the pinned plugin into the build cache and prints its path.
plugin=$(go tool -n protoc-gen-go)

mapfile -t protos < <(find . -name '*.proto' -not -path './.*' | sed 's|^\./||' | LC_ALL=C sort)
if [ "${#protos[@]}" -eq 0 ]; then
	echo "no .proto files under proto/" >&2
	exit 1
fi

generate() {
	protoc --plugin=protoc-gen-go="$plugin" -I . \
		--go_out="$1" --go_opt=paths=source_relative \
		"${protos[@]}"
}

list_generated() {
	(cd "$1" && find . -name '*.pb.go' -not -path './.*' | LC_ALL=C sort)
}

if [ "${1:-}" != "--check" ]; then
	generate .
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"

stale=0
if ! diff -u <(list_generated .) <(list_generated "$tmp") >"$tmp/.files.diff"; then
	echo "generated file set differs (- committed, + generated):" >&2
	cat "$tmp/.files.diff" >&2
	stale=1
fi
while read -r f; do
	[ -f "$f" ] || continue
	# The header names the local protoc version; the code itself comes from the
	# pinned protoc-gen-go, so a different protoc release is not staleness.
	if ! diff -u -I '^//[[:space:]]*protoc[[:space:]]' "$f" "$tmp/$f" >&2; then
		stale=1
	fi
done < <(list_generated "$tmp")

if [ "$stale" -ne 0 ]; then
	echo "proto: generated code is stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "proto: generated code is up to date"

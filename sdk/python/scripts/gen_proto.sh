#!/usr/bin/env bash
# Generates the cortexos.pb.v1 modules from api/proto/v1 with grpcio-tools'
# protoc (the version pinned in pyproject.toml's test extra).
#
#   sdk/python/scripts/gen_proto.sh           regenerate src/cortexos/pb/v1
#   sdk/python/scripts/gen_proto.sh --check   regenerate into a temporary
#                                             directory and fail if the
#                                             committed files differ
#
# PYTHON names the interpreter that has grpcio-tools (default: python3).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/src/cortexos/pb/v1"
py="${PYTHON:-python3}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && "$py" -m grpc_tools.protoc -I . --python_out="$tmp" --pyi_out="$tmp" api/proto/v1/*.proto)

# protoc names the modules after the files' paths (api.proto.v1.job_pb2);
# in the package they are cortexos.pb.v1.job_pb2.
mkdir -p "$tmp/pkg"
for f in "$tmp"/api/proto/v1/*_pb2.py "$tmp"/api/proto/v1/*_pb2.pyi; do
	sed -e 's/^from api\.proto\.v1 import /from cortexos.pb.v1 import /' \
		-e "s/'api\.proto\.v1\.\([a-z]*\)_pb2'/'cortexos.pb.v1.\1_pb2'/" \
		"$f" >"$tmp/pkg/$(basename "$f")"
done

if [ "${1:-}" = "--check" ]; then
	status=0
	for f in "$tmp"/pkg/*; do
		if ! diff -u "$out/$(basename "$f")" "$f" >"$tmp/diff" 2>&1; then
			echo "stale: sdk/python/src/cortexos/pb/v1/$(basename "$f") (run sdk/python/scripts/gen_proto.sh)"
			head -20 "$tmp/diff"
			status=1
		fi
	done
	for f in "$out"/*_pb2.py "$out"/*_pb2.pyi; do
		[ -e "$tmp/pkg/$(basename "$f")" ] || { echo "stale: $f has no .proto"; status=1; }
	done
	[ $status -eq 0 ] && echo "sdk/python/src/cortexos/pb/v1 is up to date with api/proto/v1"
	exit $status
fi

rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi
cp "$tmp"/pkg/* "$out/"
echo "generated $(ls "$tmp"/pkg | wc -l) files in sdk/python/src/cortexos/pb/v1"

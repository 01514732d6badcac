#!/usr/bin/env bash
# Generate Python code for protos/recall/v1/*.proto into serving/api/ (or into $1).
# The only command that writes generated code; `make proto-check` diffs against it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-serving/api}"
py="${PYTHON:-.venv/bin/python}"
mkdir -p "$out/recall/v1"
"$py" -m grpc_tools.protoc -I protos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  protos/recall/v1/recall.proto
# protoc writes absolute imports rooted at the proto path; make them package-relative.
sed -i 's/^from recall\.v1 import/from serving.api.recall.v1 import/' "$out/recall/v1/recall_pb2_grpc.py"
for d in "$out/recall" "$out/recall/v1"; do
  [ -f "$d/__init__.py" ] || echo '"""Generated from protos/ by scripts/gen_proto.sh; do not edit."""' > "$d/__init__.py"
done

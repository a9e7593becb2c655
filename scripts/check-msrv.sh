#!/usr/bin/env bash
# The crate's rust-version must be at least every dependency's: the oldest toolchain that can
# build it. Only one toolchain can be installed here, so this reads cargo metadata instead of
# building with the declared version.
set -euo pipefail
cd "$(dirname "$0")/.."
metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
cargo metadata --format-version 1 --locked > "$metadata"
python3 - "$metadata" <<'PY'
import json
import sys

meta = json.load(open(sys.argv[1]))
def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
def show(parts):
    return ".".join(str(part) for part in parts)
ours = next(p for p in meta["packages"] if p["name"] == "redmine-authz")
declared = ours.get("rust_version")
if not declared:
    sys.exit("Cargo.toml sets no rust-version")
needed, name = max((version(p["rust_version"]), p["name"]) for p in meta["packages"]
                   if p.get("rust_version") and p["name"] != "redmine-authz")
if version(declared) < needed:
    sys.exit(f"rust-version {declared} is older than {name} needs ({show(needed)})")
print(f"rust-version {declared}: every dependency builds with it (the newest need: {name}, {show(needed)})")
PY

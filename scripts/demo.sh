#!/usr/bin/env bash
# The whole product on this machine: installs what it needs, builds raibid, and runs
# `raibid up --demo` (a private redis-server, the server, a local agent pool, and a demo
# repository with a passing and a failing branch). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh run
cargo build --release --locked -p raibid-cli
exec ./target/release/raibid up --demo "$@"

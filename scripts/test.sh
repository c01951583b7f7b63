#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit and integration, with real
# redis-server, git, bubblewrap, buildah and an OCI registry started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== dependency licenses (cargo-deny)"
scripts/licenses.sh
echo "== dependency advisories (cargo-deny)"
scripts/advisories.sh
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit and integration, with real
# redis-server, git, bubblewrap, buildah and an OCI registry started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  else
    echo "cargo fmt and cargo clippy are needed: rustup component add rustfmt clippy" >&2
    exit 1
  fi
fi

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

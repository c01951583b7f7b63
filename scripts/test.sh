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

# A build and test run of the whole workspace takes about 25 GB (target/ and the tests'
# temporary files); a full disk shows up as an odd compiler error, so say it first.
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((25 * 1024 * 1024)) ]; then
  echo "warning: $((free_kb / 1024 / 1024)) GB free here; the build and tests need about 25 GB" >&2
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

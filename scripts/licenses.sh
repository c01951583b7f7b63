#!/usr/bin/env bash
# License check of every dependency against deny.toml, offline (cargo-deny reads the crates'
# metadata from the local registry cache; no advisory database is needed for this check).
# Installs cargo-deny from crates.io the first time (a few minutes of compiling).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-deny $version"
  cargo install --locked --quiet cargo-deny --version "$version"
fi
if [ "${1:-}" = --install-only ]; then
  exit 0
fi
cargo fetch --locked --quiet
cargo deny --offline check licenses

#!/usr/bin/env bash
# Runs the property-based fuzz targets for longer than CI does. cargo-fuzz needs a nightly
# toolchain; these are proptest targets on stable Rust instead.
#   scripts/fuzz.sh            # 20,000 cases per property
#   CASES=200000 scripts/fuzz.sh
# A failure prints the minimal failing input; proptest also saves it under the test's
# *.proptest-regressions file, which is then replayed first on every run: commit that file.
set -euo pipefail
cd "$(dirname "$0")/.."

cases=${CASES:-20000}
export PROPTEST_CASES=$cases
echo "== $cases cases per property"
cargo test --locked -p raibid-forge --test prop_webhooks
cargo test --locked -p raibid-pipeline --test prop_pipeline
cargo test --locked -p raibid-config --test prop_config
# A real server (and redis-server) on loopback, queried with arbitrary query strings.
cargo test --locked -p raibid-reliability --test api_fuzz

#!/usr/bin/env bash
# Security advisories of every dependency (RustSec, through cargo-deny) against deny.toml.
#
# The RustSec database is a git repository on GitHub. Where GitHub cannot be reached (this
# project's CI reaches only the package registries), the check cannot run: it says so loudly
# and exits 0, because a network policy is not a finding. Where it can, any advisory fails.
# Set RAIBID_REQUIRE_ADVISORIES=1 (release machines) to make an unreachable database an error.
set -euo pipefail
cd "$(dirname "$0")/.."

db=https://github.com/RustSec/advisory-db
if ! timeout 15 git ls-remote --quiet "$db" HEAD >/dev/null 2>&1; then
  echo "advisories: NOT CHECKED: the RustSec database ($db) is unreachable from this machine"
  if [ "${RAIBID_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    exit 1
  fi
  exit 0
fi
scripts/licenses.sh --install-only
cargo deny --locked check advisories

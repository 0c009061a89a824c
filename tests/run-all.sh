#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests that drive
# real iptables (legacy and nf_tables) in private network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
# The old iptables/ipset builds of OpenVZ 6 and 7 that tests/oldtools.rs runs (built offline
# from ../shared/oldtools, cached by checksum: 0.4 s when up to date, about 3 minutes at first).
mkdir -p target
../shared/oldtools/build.sh target/oldtools >target/oldtools.log 2>&1 || {
  tail -20 target/oldtools.log >&2
  exit 1
}
export VZACCT_OLDTOOLS_REQUIRED=1
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# What the nodes install (target/dist/), which tests/oldkernel.rs and tests/packaging.rs
# check; with VZACCT_DIST_REQUIRED=1 a missing artifact fails them instead of skipping.
bash packaging/build.sh
export VZACCT_DIST_REQUIRED=1
cargo test --locked
leftover=$(ip netns list | grep -c '^vzt-' || true)
if [ "$leftover" -ne 0 ]; then
  echo "tests left $leftover network namespace(s) behind" >&2
  exit 1
fi

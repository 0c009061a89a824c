#!/usr/bin/env bash
# The full reliability runs behind RELIABILITY.md (CI runs the same tests with smaller
# budgets): a 60-second concurrency run, 300 random SIGKILLs per iptables variant, and a
# long fuzzing campaign. Prints the figures the document quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
export VZACCT_LOAD_SECS=${VZACCT_LOAD_SECS:-60}
export VZACCT_CRASH_RUNS=${VZACCT_CRASH_RUNS:-300}
export VZACCT_FUZZ_CASES=${VZACCT_FUZZ_CASES:-200000}
cargo test --release --locked --test reliability -- --nocapture --test-threads=1 2>&1 \
  | grep -E '^(LOAD|[0-9]+ runs;)|^test |test result'
cargo test --release --locked --test clock 2>&1 | grep -E 'test result'
time cargo test --release --locked --test fuzz 2>&1 | grep -E 'test result'

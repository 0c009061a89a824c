#!/usr/bin/env bash
# Issue 13's size figures, before and after, counted the way the issue counted "today's 10,700
# lines": the non-blank lines of src/**/*.rs that are not comments (unit tests included),
# with the unit tests (from each file's first `#[cfg(test)]` on) also shown apart.
#   bash benches/size.sh [BEFORE [AFTER]]     (defaults: e20420c, the last commit before
#                                              issue 13's engine, and HEAD)
# Storage plus hook path: before, the files the issue names (store.rs, ledger_store.rs,
# commands/event.rs, routes.rs); after, what does their job now (ledger/store.rs,
# ledger/db.rs, backend/routes.rs; the quick hook path has no file of its own any more)
# and, on a line of its own, ledger/legacy.rs (the converter from the old formats, which
# issue 13 asked for) and commands/hook.rs (which the issue did not count before).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-e20420c}
after=${2:-HEAD}

# code lines of one file at a revision: "all test"
count() {
  git show "$1:$2" 2>/dev/null | awk '
    /#\[cfg\(test\)\]/ { t = 1 }
    /^[ \t]*$/ { next }
    /^[ \t]*\/\// { next }
    { n++; if (t) tc++ }
    END { printf "%d %d\n", n, tc }'
}

# sum over the files given (paths that do not exist at that revision count 0)
sum() {
  local rev=$1
  shift
  local all=0 test=0 a t
  for f in "$@"; do
    read -r a t < <(count "$rev" "$f")
    all=$((all + a))
    test=$((test + t))
  done
  echo "$all $test"
}

tree() {
  git ls-tree -r --name-only "$1" src | grep '\.rs$'
}

report() {
  local label=$1 rev=$2
  shift 2
  local a t
  # shellcheck disable=SC2046
  read -r a t < <(sum "$rev" $(tree "$rev"))
  printf '%-8s %-12s src/ code lines: %6d (unit tests %5d, the rest %6d)\n' \
    "$label" "$(git rev-parse --short "$rev")" "$a" "$t" "$((a - t))"
  read -r a t < <(sum "$rev" "$@")
  printf '%-8s %-12s storage and hook path: %5d (unit tests %4d): %s\n' \
    "$label" "" "$a" "$t" "$*"
}

report before "$before" src/store.rs src/ledger_store.rs src/commands/event.rs src/routes.rs
report after "$after" src/ledger/store.rs src/ledger/db.rs src/backend/routes.rs
read -r a t < <(sum "$after" src/ledger/legacy.rs src/commands/hook.rs)
printf '%-8s %-12s beside them: %5d (unit tests %4d): src/ledger/legacy.rs src/commands/hook.rs\n' \
  after "" "$a" "$t"
echo "targets (issue 13): src/ below 10,700; storage and hook path at most half of before"

#!/usr/bin/env bash
# The floor under `vzacct sync`: what iptables-restore alone costs for the very batch vzacct
# writes when bringing N containers up from empty, split into user and kernel (sys) time,
# with and without the per-rule `-m comment` match, and (when the nftables package is
# installed) the same rules loaded natively with `nft -f`. Used to explain the nf_tables
# numbers in BENCHMARKS.md. Runs only inside throwaway network namespaces vzb-<pid>-<n>.
#
# Usage, as root:  bash benches/restore-floor.sh
# Knobs: RUNS=5, SIZES="1000 10000", VARIANTS="legacy nft", CARGO_TARGET_DIR (<repo>/target),
#   VZACCT_BIN=path (use this vzacct binary to produce the batch instead of building the checkout).
# Needs what benches/bringup.sh needs; `nft` (package nftables) only for the native row.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
SIZES=${SIZES:-"1000 10000"}
VARIANTS=${VARIANTS:-"legacy nft"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

die() { echo "restore-floor.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and iptables)"
for v in $VARIANTS; do
  for p in iptables-$v-save iptables-$v-restore; do command -v "$p" >/dev/null || die "$p not found"; done
done
if [ -n "${VZACCT_BIN:-}" ]; then
  [ -x "$VZACCT_BIN" ] || die "VZACCT_BIN=$VZACCT_BIN is not executable"
  vzacct_src=$VZACCT_BIN
else
  cargo build --release --locked -q --manifest-path "$REPO/Cargo.toml"
  vzacct_src=$CARGO_TARGET_DIR/release/vzacct
fi

NS_PREFIX=vzb-$$-
NS_SEQ=0
NS=""
WORK=$(mktemp -d /tmp/vzacct-floor.XXXXXX)
cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in "$NS_PREFIX"*) ip netns del "$ns" 2>/dev/null || true ;; esac
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy, so a concurrent build into the same target dir cannot swap it mid-run.
cp "$vzacct_src" "$WORK/vzacct"
VZACCT=$WORK/vzacct
new_ns() { NS_SEQ=$((NS_SEQ + 1)); NS=$NS_PREFIX$NS_SEQ; ip netns add "$NS"; }
drop_ns() { ip netns del "$NS"; NS=""; }
in_ns() { ip netns exec "$NS" "$@"; }

# Median of each of the three columns "real user sys" (seconds), printed in ms.
medians() { # FILE
  local c
  for c in 1 2 3; do
    awk -v c="$c" '{print $c}' "$1" | sort -n | awk '{a[NR] = $1} END {
      m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.0f ", m * 1000 }'
  done
}
# Time one load of a batch into a fresh namespace, RUNS times; check our rule count.
time_load() { # LABEL WANT-RULES LISTER PATTERN PROGRAM ARGS... (batch on stdin)
  local label=$1 want=$2 lister=$3 pattern=$4 r got
  shift 4
  cat >"$WORK/in"
  : >"$WORK/times"
  for r in $(seq "$RUNS"); do
    new_ns
    { time in_ns "$@" <"$WORK/in" >/dev/null 2>"$WORK/err"; } 2>>"$WORK/times" ||
      { cat "$WORK/err" >&2; die "$label failed"; }
    got=$(in_ns $lister 2>/dev/null | grep -c -e "$pattern" || true)
    [ "$got" -eq "$want" ] || die "$label: expected $want rules, found $got"
    drop_ns
  done
  read -r real user sys <<<"$(medians "$WORK/times")"
  echo "| $label | $real | $user | $sys | $(awk -v t="$real" -v n="$want" 'BEGIN { printf "%.1f", t * 1000 / n }') |"
}
TIMEFORMAT='%R %U %S'

echo "| load of the bring-up batch into a fresh namespace | real ms | user ms | sys ms | real us/rule |"
echo "|---|---:|---:|---:|---:|"
for n in $SIZES; do
  awk -v n="$n" 'BEGIN { print "       0     0     1"
    for (i = 0; i < n; i++) { x = int(i / 250); y = i % 250 + 1
      printf "%10d     0     1 10.1.%d.%d 10.2.%d.%d\n", i + 101, x, y, x, y } }' >"$WORK/veinfo"
  for v in $VARIANTS; do
    # Capture vzacct's own batch through a wrapper named as its configured iptables.
    mkdir -p "$WORK/wrap"
    ln -sf "$(command -v "iptables-$v-save")" "$WORK/wrap/iptables-$v-save"
    printf '#!/usr/bin/env bash\ncat >"%s"\nexec %s "$@" <"%s"\n' "$WORK/batch" \
      "$(command -v "iptables-$v-restore")" "$WORK/batch" >"$WORK/wrap/iptables-$v-restore"
    chmod +x "$WORK/wrap/iptables-$v-restore"
    rm -rf "$WORK/state"
    printf '[vzctl]\nveinfo = %s\n[netfilter]\niptables = %s\nipv6 = no\nbackend = iptables\n[storage]\nstate_dir = %s\ncsv_dir = %s\n' \
      "$WORK/veinfo" "$WORK/wrap/iptables-$v" "$WORK/state" "$WORK/csv" >"$WORK/vzacct.conf"
    new_ns
    in_ns "$VZACCT" --config "$WORK/vzacct.conf" sync >/dev/null
    drop_ns
    rules=$((8 * n))
    time_load "$n containers, iptables-$v-restore, vzacct's batch" "$rules" "iptables-$v-save -t filter" '^-A VZACCT-' \
      "iptables-$v-restore" -w --noflush --counters <"$WORK/batch"
    # The same rules without the comment match.
    sed 's/ -m comment --comment "ct:[0-9]*"//' "$WORK/batch" >"$WORK/bare"
    time_load "$n containers, iptables-$v-restore, same batch without -m comment" "$rules" "iptables-$v-save -t filter" '^-A VZACCT-' \
      "iptables-$v-restore" -w --noflush --counters <"$WORK/bare"
    if [ "$v" = nft ] && command -v nft >/dev/null && command -v iptables-restore-translate >/dev/null; then
      {
        echo "add table ip filter"
        echo "add chain ip filter INPUT { type filter hook input priority 0; }"
        echo "add chain ip filter FORWARD { type filter hook forward priority 0; }"
        echo "add chain ip filter OUTPUT { type filter hook output priority 0; }"
        iptables-restore-translate -f "$WORK/batch" | grep -v -e '^#' -e '^add table'
      } >"$WORK/native.nft"
      time_load "$n containers, native \`nft -f\` of the same rules (comment as nft comment)" \
        "$rules" "nft list ruleset" 'comment "ct:' nft -f - <"$WORK/native.nft"
    fi
  done
done

#!/usr/bin/env bash
# Per-event cost on a big node: what one `vzacct add` (a container start) costs when N
# containers are already accounted, and what it is made of: one `iptables-save -c -t filter`
# of the whole table, one `iptables-restore --noflush` (a no-op batch, and the 8-rule batch
# vzacct actually writes for the new container), and vzacct's own CPU time. The baseline for
# the ipset backend. Runs only inside throwaway network namespaces vzb-<pid>-<n>, all deleted
# on exit; the host's firewall is never touched.
#
# Usage, as root:  bash benches/per-event.sh
# Knobs: RUNS=9, ADD_BASE=10000, VARIANTS="legacy nft", CARGO_TARGET_DIR (<repo>/target),
#   VZACCT_BIN=path  use this vzacct binary instead of building the checkout (the report then
#                    says so; e.g. a binary built from an exact commit while the tree moves).
# Needs what benches/bringup.sh needs, plus `perf` (package linux-perf) for the CPU time of the
# vzacct process alone.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-9}
ADD_BASE=${ADD_BASE:-10000}
VARIANTS=${VARIANTS:-"legacy nft"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

die() { echo "per-event.sh: $*" >&2; exit 1; }
log() { echo "per-event.sh: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and iptables)"
for v in $VARIANTS; do
  case $v in legacy | nft) ;; *) die "VARIANTS: unknown variant $v (legacy or nft)" ;; esac
  for p in iptables-$v-save iptables-$v-restore; do command -v "$p" >/dev/null || die "$p not found"; done
done
command -v perf >/dev/null || die "perf not found (Debian: apt-get install linux-perf)"
[[ $ADD_BASE =~ ^[0-9]+$ ]] && [ "$ADD_BASE" -ge 1 ] && [ "$ADD_BASE" -le 62500 ] ||
  die "ADD_BASE must be 1..62500"
[ "$RUNS" -ge 1 ] || die "RUNS must be at least 1"

if [ -n "${VZACCT_BIN:-}" ]; then
  [ -x "$VZACCT_BIN" ] || die "VZACCT_BIN=$VZACCT_BIN is not executable"
  src=$VZACCT_BIN
  rev="the prebuilt binary $VZACCT_BIN"
else
  log "building the release binary into $CARGO_TARGET_DIR"
  cargo build --release --locked -q --manifest-path "$REPO/Cargo.toml"
  src=$CARGO_TARGET_DIR/release/vzacct
  if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
    [ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock)" ] || rev+=" + uncommitted changes"
    rev="commit $rev"
  else
    rev="unknown (not a git checkout)"
  fi
fi

NS_PREFIX=vzb-$$-
NS_SEQ=0
NS=""
WORK=$(mktemp -d /tmp/vzacct-event.XXXXXX)
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
cp "$src" "$WORK/vzacct"
VZACCT=$WORK/vzacct
new_ns() { NS_SEQ=$((NS_SEQ + 1)); NS=$NS_PREFIX$NS_SEQ; ip netns add "$NS"; }
drop_ns() { ip netns del "$NS"; NS=""; }
in_ns() { ip netns exec "$NS" "$@"; }
now() { date +%s%N; }

# Median of numbers (one per argument), printed with one decimal.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
  m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m }'; }
# Run CMD in the namespace with stdin from IN and stdout to OUT, timed by bash's `time`
# inside it (so `ip netns exec` is not counted; user and sys are the command's rusage,
# children included, like GNU time's %U and %S but to the millisecond). Prints "wall user sys" ms.
timed() { # IN OUT CMD...
  in_ns bash -c 'TIMEFORMAT="%3R %3U %3S"; i=$1 o=$2; shift 2
    { time "$@" <"$i" >"$o" 2>"$o.err"; } 2>&1 || { cat "$o.err" >&2; exit 1; }' _ "$@" |
    awk '{ printf "%.0f %.0f %.0f", $1 * 1000, $2 * 1000, $3 * 1000 }'
}
count_ours() { in_ns "iptables-$1-save" -t filter 2>/dev/null | grep -c 'ct:' || true; }
expect_rules() { [ "$2" -eq "$3" ] || die "$1: expected $3 rules in the namespace, found $2"; }
vz() { # CONFIG ARGS...
  local cfg=$1
  shift
  in_ns "$VZACCT" --config "$cfg" "$@" >"$WORK/vz.out" 2>&1 ||
    { cat "$WORK/vz.out" >&2; die "vzacct $* failed in $NS"; }
}
gen_config() { # IPTABLES VARIANT FILE
  printf '[vzctl]\nveinfo = %s\nconf_dir = %s\n[netfilter]\niptables = %s\nip6tables = ip6tables-%s\nipv6 = no\nbackend = iptables\n[storage]\nstate_dir = %s\ncsv_dir = %s\n' \
    "$WORK/veinfo" "$WORK/conf" "$1" "$2" "$WORK/state" "$WORK/csv" >"$3"
}

awk -v n="$ADD_BASE" 'BEGIN { print "       0     0     1"
  for (i = 0; i < n; i++) { x = int(i / 250); y = i % 250 + 1
    printf "%10d     0     1 10.1.%d.%d 10.2.%d.%d\n", i + 101, x, y, x, y } }' >"$WORK/veinfo"
base=$((8 * ADD_BASE))
declare -A R

for v in $VARIANTS; do
  rm -rf "$WORK/state" "$WORK/csv" "$WORK/conf"
  gen_config "iptables-$v" "$v" "$WORK/plain.conf"
  # A restore wrapper that keeps the batch, to capture the 8-rule add batch once.
  mkdir -p "$WORK/wrap"
  ln -sf "$(command -v "iptables-$v-save")" "$WORK/wrap/iptables-$v-save"
  printf '#!/usr/bin/env bash\ncat >"%s"\nexec %s "$@" <"%s"\n' "$WORK/batch" \
    "$(command -v "iptables-$v-restore")" "$WORK/batch" >"$WORK/wrap/iptables-$v-restore"
  chmod +x "$WORK/wrap/iptables-$v-restore"
  gen_config "$WORK/wrap/iptables-$v" "$v" "$WORK/capture.conf"

  # vzacct's own CPU in a bring-up from empty (fresh namespace and state each run), for
  # comparison with what one event costs.
  sc=()
  for r in $(seq "$RUNS"); do
    rm -rf "$WORK/state" "$WORK/csv" "$WORK/conf"
    new_ns
    in_ns perf stat --no-inherit -x, -e task-clock -o "$WORK/p" "$VZACCT" --config "$WORK/plain.conf" sync >/dev/null
    c=$(awk -F, '$3 ~ /^task-clock/ { print $1 }' "$WORK/p")
    [ -n "$c" ] || { cat "$WORK/p" >&2; die "perf stat gave no task-clock"; }
    sc+=("$c")
    expect_rules "sync ($v, run $r)" "$(count_ours "$v")" "$base"
    drop_ns
  done
  R[sync_own,$v]=$(median "${sc[@]}")
  rm -rf "$WORK/state" "$WORK/csv" "$WORK/conf"

  new_ns
  log "$v: bringing $ADD_BASE containers up"
  vz "$WORK/plain.conf" sync
  expect_rules "base ($v)" "$(count_ours "$v")" "$base"
  R[ledger0,$v]=$(du -k "$WORK/state" | awk 'END { printf "%.1f", $1 / 1024 }')
  # The add batch for a new container, and the batch that takes its rules out again.
  vz "$WORK/capture.conf" add 990000 10.3.9.1 10.4.9.1
  cp "$WORK/batch" "$WORK/add.batch"
  vz "$WORK/plain.conf" remove 990000
  expect_rules "capture ($v)" "$(count_ours "$v")" "$base"
  { echo '*filter'; sed -n 's/^\[[0-9]*:[0-9]*\] -A /-D /p' "$WORK/add.batch"; echo COMMIT; } >"$WORK/del.batch"
  printf '*filter\nCOMMIT\n' >"$WORK/noop.batch"

  nsx=() sw=() su=() ss=() nw=() nu=() ns_=() bw=() bu=() bs=()
  aw=() au=() as=() ae=() pc=()
  for r in $(seq "$RUNS"); do
    # `ip netns exec` alone.
    t0=$(now); in_ns true; t1=$(now)
    nsx+=("$(((t1 - t0) / 1000000))")
    # One iptables-save of the whole table, as vzacct runs it.
    t=$(timed /dev/null "$WORK/save.out" "iptables-$v-save" -c -t filter) || die "iptables-$v-save failed"
    read -r w u s <<<"$t"; sw+=("$w") su+=("$u") ss+=("$s")
    [ "$(grep -c 'ct:' "$WORK/save.out")" -eq "$base" ] || die "save ($v) did not list $base rules"
    # One no-op iptables-restore --noflush (nothing to change).
    t=$(timed "$WORK/noop.batch" /dev/null "iptables-$v-restore" -w --noflush --counters) || die "no-op restore failed"
    read -r w u s <<<"$t"; nw+=("$w") nu+=("$u") ns_+=("$s")
    # vzacct's 8-rule add batch alone (then taken out again, untimed).
    t=$(timed "$WORK/add.batch" /dev/null "iptables-$v-restore" -w --noflush --counters) || die "add batch failed"
    read -r w u s <<<"$t"; bw+=("$w") bu+=("$u") bs+=("$s")
    expect_rules "add batch ($v, run $r)" "$(count_ours "$v")" $((base + 8))
    in_ns "iptables-$v-restore" -w --noflush <"$WORK/del.batch"
    expect_rules "delete batch ($v, run $r)" "$(count_ours "$v")" "$base"
    # `vzacct add` timed: wall, and CPU of vzacct *with* its iptables children.
    ctid=$((900000 + r))
    t0=$(now)
    t=$(timed /dev/null /dev/null "$VZACCT" --config "$WORK/plain.conf" add "$ctid" "10.3.0.$r" "10.4.0.$r") || die "add failed"
    t1=$(now)
    read -r w u s <<<"$t"; aw+=("$w") au+=("$u") as+=("$s") ae+=("$(((t1 - t0) / 1000000))")
    expect_rules "add ($v, run $r)" "$(count_ours "$v")" $((base + 8))
    vz "$WORK/plain.conf" remove "$ctid"
    # `vzacct add` under perf: CPU of the vzacct process alone (children not counted).
    ctid=$((910000 + r))
    in_ns perf stat --no-inherit -x, -e task-clock -o "$WORK/p" "$VZACCT" --config "$WORK/plain.conf" add "$ctid" "10.3.1.$r" "10.4.1.$r" >/dev/null
    c=$(awk -F, '$3 ~ /^task-clock/ { print $1 }' "$WORK/p")
    [ -n "$c" ] || { cat "$WORK/p" >&2; die "perf stat gave no task-clock"; }
    pc+=("$c")
    expect_rules "perf add ($v, run $r)" "$(count_ours "$v")" $((base + 8))
    vz "$WORK/plain.conf" remove "$ctid"
  done
  R[ledger1,$v]=$(du -k "$WORK/state" | awk 'END { printf "%.1f", $1 / 1024 }')
  drop_ns
  R[nsx,$v]=$(median "${nsx[@]}")
  R[save,$v]="$(median "${sw[@]}") | $(median "${su[@]}") | $(median "${ss[@]}")"
  R[noop,$v]="$(median "${nw[@]}") | $(median "${nu[@]}") | $(median "${ns_[@]}")"
  R[batch,$v]="$(median "${bw[@]}") | $(median "${bu[@]}") | $(median "${bs[@]}")"
  R[add,$v]="$(median "${aw[@]}") | $(median "${au[@]}") | $(median "${as[@]}")"
  R[addx,$v]=$(median "${ae[@]}")
  R[own,$v]=$(median "${pc[@]}")
  log "$v: sync own CPU ${sc[*]} ms; save ${sw[*]}; noop ${nw[*]}; batch ${bw[*]}; add ${aw[*]} (with netns ${ae[*]}); own CPU ${pc[*]} ms"
done

cleanup_check=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^$NS_PREFIX" || true)
[ "$cleanup_check" -eq 0 ] || die "left $cleanup_check namespace(s) behind"

echo "## vzacct per-event cost, $ADD_BASE containers accounted"
echo
echo "vzacct: $rev. nproc $(nproc), kernel $(uname -r), $(for v in $VARIANTS; do iptables-$v --version; done | paste -sd, | sed 's/,/, /g');" \
  "median of $RUNS runs, milliseconds. Wall/user/sys from bash's \`time\` inside the namespace (\`ip netns exec\` not included; user/sys include the command's children)."
echo
echo "| one event, $(printf '%s' "$base" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta') rules in the table | variant | wall ms | user ms | sys ms |"
echo "|---|---|---:|---:|---:|"
for v in $VARIANTS; do
  echo "| \`iptables-save -c -t filter\` | $v | ${R[save,$v]} |"
  echo "| no-op \`iptables-restore -w --noflush --counters\` (\`*filter\`, \`COMMIT\`) | $v | ${R[noop,$v]} |"
  echo "| vzacct's 8-rule add batch through \`iptables-restore -w --noflush --counters\` | $v | ${R[batch,$v]} |"
  echo "| \`vzacct add\` of 1 container (2 IPs), vzacct + its iptables children | $v | ${R[add,$v]} |"
  echo "| \`vzacct add\`: CPU of the vzacct process alone (\`perf stat --no-inherit\` task-clock) | $v | | ${R[own,$v]} (user+sys) | |"
  echo "| \`vzacct add\` wall including \`ip netns exec\` (alone: ${R[nsx,$v]} ms) | $v | ${R[addx,$v]} | | |"
  echo "| for comparison: \`vzacct sync\` of all $ADD_BASE from empty, CPU of the vzacct process alone | $v | | ${R[sync_own,$v]} (user+sys) | |"
done
echo
for v in $VARIANTS; do
  echo "State directory ($v): ${R[ledger0,$v]} MiB after bring-up, ${R[ledger1,$v]} MiB after the timed adds (from the first harvest on, the ledger keeps the last counters seen on each of the $base rules)."
done

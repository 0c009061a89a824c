#!/usr/bin/env bash
# Hook and dump latency on the OpenVZ 7 userland (RHEL 7's iptables 1.4.21 and ipset 7.1,
# from target/oldtools) beside the modern tools (iptables-legacy 1.8.x, the system's ipset),
# with N containers accounted (two IPv4 addresses each, backend = ipset). Runs only inside
# throwaway network namespaces vzo-<pid>-<n>, deleted on exit; the host's firewall is never
# touched.
#
# Usage, as root:  bash benches/oldtools.sh
# Knobs: N=1000 containers, RUNS=15, USERLANDS="modern el7", VZACCT_BIN=path (else the
#   release build of this checkout). Needs ../shared/oldtools/build.sh target/oldtools first.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
RUNS=${RUNS:-15}
USERLANDS=${USERLANDS:-"modern el7"}
OLD=$REPO/target/oldtools
die() { echo "oldtools.sh: $*" >&2; exit 1; }
log() { echo "oldtools.sh: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
[ -x "$OLD/iptables-1.4.21-el7/bin/iptables" ] && [ -x "$OLD/ipset-7.1/bin/ipset" ] ||
  die "old tools missing: run ../shared/oldtools/build.sh target/oldtools"
if [ -n "${VZACCT_BIN:-}" ]; then
  src=$VZACCT_BIN rev="prebuilt $VZACCT_BIN"
else
  cargo build --release --locked -q --manifest-path "$REPO/Cargo.toml"
  src=${CARGO_TARGET_DIR:-$REPO/target}/release/vzacct
  rev="commit $(git -C "$REPO" rev-parse --short HEAD)"
  [ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock)" ] || rev+=" + uncommitted changes"
fi
WORK=$(mktemp -d /tmp/vzacct-old.XXXXXX)
NS_PREFIX=vzo-$$-
cleanup() {
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in "$NS_PREFIX"*) ip netns del "$ns" 2>/dev/null || true ;; esac
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
cp "$src" "$WORK/vzacct"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
  m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m }'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%d-%d", lo, hi}'; }

# Time CMD... inside the namespace NS, N times; prints the milliseconds of each run.
# Everything runs in one `ip netns exec`, so its own cost is not counted.
timed_loop() { # NS RUNS CMD...
  local ns=$1 runs=$2
  shift 2
  ip netns exec "$ns" bash -c 'runs=$1; shift
    for i in $(seq "$runs"); do
      s=$(date +%s%N); VEID=$((800000 + i)) "$@" >/dev/null 2>>"$ERR" || exit 1; e=$(date +%s%N)
      echo $(((e - s) / 1000000))
    done' _ "$runs" "$@"
}

declare -A R
seq_=0
for u in $USERLANDS; do
  case $u in
    modern) ipt=$(command -v iptables-legacy) ips=$(command -v ipset)
      ver="$(iptables-legacy --version), $(ipset --version | head -1)" ;;
    el7) ipt=$OLD/iptables-1.4.21-el7/bin/iptables ips=$OLD/ipset-7.1/bin/ipset
      ver="iptables-1.4.21-el7, ipset-7.1" ;;
    *) die "USERLANDS: modern or el7" ;;
  esac
  d=$WORK/$u
  mkdir -p "$d/conf"
  echo "boot-1" >"$d/boot_id"
  awk -v n="$N" 'BEGIN { print "       0     0     1"
    for (i = 0; i < n; i++) { x = int(i / 250); y = i % 250 + 1
      printf "%10d     0     1 10.1.%d.%d 10.2.%d.%d\n", i + 101, x, y, x, y } }' >"$d/veinfo"
  printf 'IP_ADDRESS="10.3.0.1 10.4.0.1"\n' >"$d/new.conf"
  printf '[vzctl]\nveinfo = %s\nconf_dir = %s\nhook_log = %s\n[netfilter]\niptables = %s\nipset = %s\nipv6 = no\nbackend = ipset\n[storage]\nstate_dir = %s\ncsv_dir = %s\ntimezone = UTC\n' \
    "$d/veinfo" "$d/conf" "$d/hook.log" "$ipt" "$ips" "$d/state" "$d/csv" >"$d/cfg"
  seq_=$((seq_ + 1))
  ns=$NS_PREFIX$seq_
  ip netns add "$ns"
  export VZACCT_BOOT_ID_FILE=$d/boot_id ERR=$d/err
  ip netns exec "$ns" "$WORK/vzacct" --config "$d/cfg" sync >/dev/null || die "$u: sync failed"
  # The new container's IPs are not routed to venet0: umount runs over that container alone.
  m=() um=() dm=() sm=()
  for r in $(seq "$RUNS"); do
    m+=($(timed_loop "$ns" 1 env VE_CONFFILE="$d/new.conf" "$WORK/vzacct" --config "$d/cfg" hook mount)) || die "$u: hook mount failed: $(cat "$d/err")"
    um+=($(timed_loop "$ns" 1 "$WORK/vzacct" --config "$d/cfg" hook umount)) || die "$u: hook umount failed: $(cat "$d/err")"
  done
  for r in $(seq "$RUNS"); do
    dm+=($(timed_loop "$ns" 1 "$WORK/vzacct" --config "$d/cfg" dump)) || die "$u: dump failed: $(cat "$d/err")"
    sm+=($(timed_loop "$ns" 1 "$WORK/vzacct" --config "$d/cfg" show --json)) || die "$u: show failed"
  done
  full=$(grep -c 'full run' "$d/hook.log" || true)
  grep -q ' error: ' "$d/hook.log" && die "$u: a hook failed: $(grep ' error: ' "$d/hook.log" | head -1)"
  R[ver,$u]=$ver
  R[mount,$u]="$(median "${m[@]}") ($(range "${m[@]}"))"
  R[umount,$u]="$(median "${um[@]}") ($(range "${um[@]}"))"
  R[dump,$u]="$(median "${dm[@]}") ($(range "${dm[@]}"))"
  R[show,$u]="$(median "${sm[@]}") ($(range "${sm[@]}"))"
  R[full,$u]=$full
  ip netns del "$ns"
  log "$u: mount ${m[*]}; umount ${um[*]}; dump ${dm[*]}; show ${sm[*]}"
done

echo "vzacct: $rev. nproc $(nproc), kernel $(uname -r); $N containers (2 IPv4 each), backend = ipset;" \
  "median ms of $RUNS (min-max), timed inside the namespace."
echo
printf '| median ms (min-max) |'; for u in $USERLANDS; do printf ' %s |' "${R[ver,$u]}"; done; echo
printf '|---|'; for u in $USERLANDS; do printf -- '---:|'; done; echo
for k in mount umount; do
  printf '| `hook %s` |' "$k"; for u in $USERLANDS; do printf ' %s |' "${R[$k,$u]}"; done; echo
done
printf '| hooks that needed the full run (of %d) |' $((2 * RUNS)); for u in $USERLANDS; do printf ' %s |' "${R[full,$u]}"; done; echo
printf '| `dump` |'; for u in $USERLANDS; do printf ' %s |' "${R[dump,$u]}"; done; echo
printf '| `show --json` |'; for u in $USERLANDS; do printf ' %s |' "${R[show,$u]}"; done; echo

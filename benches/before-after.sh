#!/usr/bin/env bash
# Issue 13's figures, "before and after in one run": two vzacct binaries measured by the same
# script on the same machine at the same time, interleaved run by run, with the method of
# benches/scale.sh parts 2-5 (same node: N containers x 2 IPv4, ipset backend; same commands,
# same timing inside the namespace with vzctl's clean environment, same /usr/bin/time for
# memory). Each binary has its own node (namespace and state dir) side by side; in every run
# both are timed, one right after the other, the order alternating from run to run, so load
# from elsewhere on the machine falls on both alike. Everything runs inside throwaway network
# namespaces named vzba-<pid>-<n>, all deleted on exit; the host's firewall is never touched.
#
# Usage, as root, from anywhere:
#   bash benches/before-after.sh >report.md     # Markdown on stdout, every run on stderr
#
# "before" is built from BEFORE (a commit, default e20420c: the JSON bucket ledger) with
# `git archive` into $BA_CACHE/src-<commit> and `cargo build --release` into its own target
# dir there (kept, so a second run does not rebuild); "after" is this checkout, built into
# $CARGO_TARGET_DIR (default <repo>/target). Private copies of both binaries are timed.
# Knobs (environment), all optional:
#   PARTS="hook dump bringup mem"   what to measure (any subset)
#   BEFORE=e20420c       the commit to compare with
#   BEFORE_BIN= AFTER_BIN=   prebuilt binaries instead (then no build of that side)
#   BA_CACHE=/var/tmp/vzacct-ba   where the before source and its target dir are kept
#   VARIANT=nft          iptables flavour: nft or legacy
#   N=10000              containers (2 IPv4 each)
#   HOOK_RUNS=20 CMD_RUNS=9 MEM_RUNS=3
# Needs (Debian 12): bash, coreutils, git, cargo, gawk/mawk, iproute2, iptables, ipset, time.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PARTS=${PARTS:-"hook dump bringup mem"}
BEFORE=${BEFORE:-e20420c}
BA_CACHE=${BA_CACHE:-/var/tmp/vzacct-ba}
VARIANT=${VARIANT:-nft}
N=${N:-10000}
HOOK_RUNS=${HOOK_RUNS:-20}
CMD_RUNS=${CMD_RUNS:-9}
MEM_RUNS=${MEM_RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SIDES="before after"

die() { echo "before-after.sh: $*" >&2; exit 1; }
log() { echo "before-after.sh: $(date +%T) $*" >&2; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, iptables, ipset)"
case $VARIANT in legacy | nft) ;; *) die "unknown iptables variant $VARIANT (legacy or nft)" ;; esac
for p in ip ipset awk sed grep sort git "iptables-$VARIANT-save" "iptables-$VARIANT-restore"; do
  command -v "$p" >/dev/null || die "$p not found"
done
[ -x /usr/bin/time ] || die "/usr/bin/time not found (Debian: apt-get install time)"
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 62000 ] || die "N must be 1..62000"

# --- the two binaries -------------------------------------------------------------------------
declare -A SRC REV
brev=$(git -C "$REPO" rev-parse --short "$BEFORE") || die "unknown commit $BEFORE"
if [ -n "${BEFORE_BIN:-}" ]; then
  SRC[before]=$BEFORE_BIN
else
  bsrc=$BA_CACHE/src-$brev
  if [ ! -f "$bsrc/Cargo.toml" ]; then
    log "extracting $brev into $bsrc"
    rm -rf "$bsrc"
    mkdir -p "$bsrc"
    git -C "$REPO" archive "$brev" | tar -x -C "$bsrc"
  fi
  log "building $brev into $BA_CACHE/target-$brev"
  CARGO_TARGET_DIR=$BA_CACHE/target-$brev cargo build --release --locked -q --manifest-path "$bsrc/Cargo.toml"
  SRC[before]=$BA_CACHE/target-$brev/release/vzacct
fi
REV[before]=$brev
if [ -n "${AFTER_BIN:-}" ]; then
  SRC[after]=$AFTER_BIN
  REV[after]="prebuilt $AFTER_BIN"
else
  log "building this checkout into $CARGO_TARGET_DIR"
  cargo build --release --locked -q --manifest-path "$REPO/Cargo.toml"
  SRC[after]=$CARGO_TARGET_DIR/release/vzacct
  REV[after]=$(git -C "$REPO" rev-parse --short HEAD)
  [ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock)" ] || REV[after]+=" + uncommitted changes"
fi

# --- namespaces and scratch space: all removed on exit ----------------------------------------
NS_PREFIX=vzba-$$-
NS_SEQ=0
NS=""
WORK=$(mktemp -d /tmp/vzacct-ba.XXXXXX)
cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case $ns in "$NS_PREFIX"*) ip netns del "$ns" 2>/dev/null || true ;; esac
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Private copies, so a concurrent build into the same target dir cannot swap one mid-run.
declare -A BIN
for s in $SIDES; do cp "${SRC[$s]}" "$WORK/vzacct-$s"; BIN[$s]=$WORK/vzacct-$s; done

new_ns() { NS_SEQ=$((NS_SEQ + 1)); NS=$NS_PREFIX$NS_SEQ; ip netns add "$NS"; }
in_ns() { ip netns exec "$NS" "$@"; }

# --- helpers (as in benches/scale.sh) ---------------------------------------------------------
median() { # DIV DECIMALS NUMBERS...
  local div=$1 dec=$2
  shift 2
  printf '%s\n' "$@" | sort -g | awk -v d="$div" -v p="$dec" '{a[NR] = $1} END {
    if (NR == 0) { print "n/a"; exit }
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.*f", p, m / d }'
}
minmax() { # DIV DECIMALS NUMBERS...
  local div=$1 dec=$2
  shift 2
  printf '%s\n' "$@" | sort -g | awk -v d="$div" -v p="$dec" '{a[NR] = $1} END {
    printf "%.*f-%.*f", p, a[1] / d, p, a[NR] / d }'
}
env_words() { # "VAR=x VAR2=a+b": the words, each "+" standing for a space (IP_ADDR lists)
  local w
  EW=()
  for w in $1; do EW+=("${w//+/ }"); done
}
timed() { # "VAR=x VAR2=y" CMD...: microseconds, timed inside the namespace; output in $WORK/out
  env_words "$1"
  shift
  in_ns env -i PATH="$PATH" "${EW[@]}" bash -c '
    o=$1; shift
    s=$EPOCHREALTIME
    "$@" >"$o" 2>&1 || { rc=$?; cat "$o" >&2; exit "$rc"; }
    e=$EPOCHREALTIME
    echo $(( 10#${e/./} - 10#${s/./} ))' _ "$WORK/out" "$@" || die "failed in $NS: $*"
}
peak_kib() { # "VAR=x" CMD...: peak RSS in KiB (the largest of the command and its children)
  env_words "$1"
  shift
  in_ns env -i PATH="$PATH" "${EW[@]}" /usr/bin/time -f %M -o "$WORK/mem" "$@" >"$WORK/out" 2>&1 ||
    { cat "$WORK/out" >&2; die "failed in $NS: $*"; }
  tail -1 "$WORK/mem"
}
gen_veinfo() { # N FILE
  awk -v n="$1" 'BEGIN { print "       0     0     1"
    for (i = 0; i < n; i++) { x = int(i / 250); y = i % 250 + 1
      printf "%10d     0     1 10.1.%d.%d 10.2.%d.%d\n", i + 101, x, y, x, y } }' >"$2"
}
gen_config() { # DIR
  mkdir -p "$1/conf"
  cat >"$1/vzacct.conf" <<CONF
[vzctl]
veinfo = $WORK/veinfo
conf_dir = $1/conf
hook_log = $1/hook.log
strict = yes
[netfilter]
iptables = iptables-$VARIANT
ip6tables = ip6tables-$VARIANT
ipset = ipset
backend = ipset
ipv6 = no
[storage]
state_dir = $1/state
csv_dir = $1/csv
CONF
}
count_ours() { in_ns ipset save | grep -c '^add vzacct-.* comment "ct:' || true; }  # (not the generation elements)
expect() { [ "$2" -eq "$3" ] || die "$1: expected $3, found $2"; }
vz() { # SIDE CONFIG ARGS... (untimed)
  local side=$1 cfg=$2
  shift 2
  in_ns env -i PATH="$PATH" "${BIN[$side]}" --config "$cfg" "$@" >"$WORK/vz.out" 2>&1 ||
    { cat "$WORK/vz.out" >&2; die "vzacct ($side) $* failed in $NS"; }
}
hook_ips() { # I: the two IPs of hook container I as vzctl's IP_ADDR ("+" for the space)
  printf '10.3.%d.%d+10.4.%d.%d' $(($1 / 250)) $(($1 % 250 + 1)) $(($1 / 250)) $(($1 % 250 + 1))
}
# The two sides in run I: before first in odd runs, after first in even ones.
order() { if [ $(($1 % 2)) -eq 1 ]; then echo "$SIDES"; else echo "after before"; fi; }

gen_veinfo "$N" "$WORK/veinfo"
want=$((8 * N)) # 4 elements per IP (forward in/out, local in/out), 2 IPs per container
declare -A NODE_NS NODE_DIR R RAW
# A node per side: N containers accounted and one dump done.
nodes_up() {
  local s
  for s in $SIDES; do
    NODE_DIR[$s]=$WORK/node-$s-$NS_SEQ
    gen_config "${NODE_DIR[$s]}"
    new_ns
    NODE_NS[$s]=$NS
    vz "$s" "${NODE_DIR[$s]}/vzacct.conf" sync
    vz "$s" "${NODE_DIR[$s]}/vzacct.conf" dump
    expect "bring-up of $N containers ($s)" "$(count_ours)" "$want"
  done
}
nodes_down() {
  local s
  for s in $SIDES; do ip netns del "${NODE_NS[$s]}"; rm -rf "${NODE_DIR[$s]}"; done
}
on() { NS=${NODE_NS[$1]}; CFG=${NODE_DIR[$1]}/vzacct.conf; } # SIDE: work on its node
LOAD_START=$(loadavg)
log "load average at the start: $LOAD_START"

# --- hooks: net-add (starting, two IPs) of a new container, then its umount ------------------
if part hook; then
  nodes_up
  for i in $(seq "$HOOK_RUNS"); do
    ctid=$((900000 + i))
    for s in $(order "$i"); do
      on "$s"
      RAW[mount,$s]+="$(timed "VEID=$ctid VE_STATE=starting IP_ADDR=$(hook_ips "$i")" "${BIN[$s]}" --config "$CFG" hook net-add) "
      grep -q "hook net-add: VE_STATE=starting accounting" "$WORK/out" || { cat "$WORK/out" >&2; die "hook net-add ($s) did not account"; }
      ! grep -q "full run" "$WORK/out" || R[full,$s]=$((${R[full,$s]:-0} + 1))
      [ "$i" -eq 1 ] && expect "after hook net-add ($s)" "$(count_ours)" $((want + 8))
      RAW[umount,$s]+="$(timed "VEID=$ctid" "${BIN[$s]}" --config "$CFG" hook umount) "
      grep -q "hook umount: stopped accounting" "$WORK/out" || { cat "$WORK/out" >&2; die "hook umount ($s) did not stop"; }
      ! grep -q "full run" "$WORK/out" || R[full,$s]=$((${R[full,$s]:-0} + 1))
    done
  done
  for s in $SIDES; do
    on "$s"
    vz "$s" "$CFG" dump
    expect "after the hooks and a dump ($s)" "$(count_ours)" "$want"
  done
  nodes_down
  R[load,hook]=$(loadavg)
fi

# --- dump and show --json ---------------------------------------------------------------------
if part dump; then
  nodes_up
  for i in $(seq "$CMD_RUNS"); do
    for s in $(order "$i"); do
      on "$s"
      RAW[dump,$s]+="$(timed "" "${BIN[$s]}" --config "$CFG" dump) "
    done
    for s in $(order "$i"); do
      on "$s"
      RAW[show,$s]+="$(timed "" "${BIN[$s]}" --config "$CFG" show --json) "
      [ "$(grep -o '"ctid"' "$WORK/out" | wc -l)" -eq "$N" ] || die "show --json ($s) did not list $N containers"
    done
  done
  nodes_down
  R[load,dump]=$(loadavg)
fi

# --- bring-up from empty: sync from veinfo; restore of a dumped ledger at a new boot ----------
if part bringup; then
  nodes_up
  for s in $SIDES; do cp -a "${NODE_DIR[$s]}/state" "$WORK/saved-state-$s"; done
  nodes_down
  for i in $(seq "$CMD_RUNS"); do
    for s in $(order "$i"); do
      dir=$WORK/bu-$s-$i
      gen_config "$dir"
      new_ns
      RAW[sync,$s]+="$(timed "" "${BIN[$s]}" --config "$dir/vzacct.conf" sync) "
      expect "sync from empty ($s, run $i)" "$(count_ours)" "$want"
      ip netns del "$NS"
      rm -rf "$dir/state"
      cp -a "$WORK/saved-state-$s" "$dir/state"
      echo "00000000-0000-4000-8000-$(printf '%012d' "$i")" >"$dir/boot_id"
      new_ns
      RAW[restore,$s]+="$(timed "VZACCT_BOOT_ID_FILE=$dir/boot_id" "${BIN[$s]}" --config "$dir/vzacct.conf" restore) "
      expect "restore ($s, run $i)" "$(count_ours)" "$want"
      ip netns del "$NS"
      rm -rf "$dir"
    done
  done
  rm -rf "$WORK"/saved-state-*
  R[load,bringup]=$(loadavg)
fi

# --- peak RSS of every command ----------------------------------------------------------------
MEM_CMDS="sync dump show status mount umount add remove"
if part mem; then
  for i in $(seq "$MEM_RUNS"); do
    for s in $(order "$i"); do
      dir=$WORK/mem-$s-$i
      gen_config "$dir"
      new_ns
      RAW[mem,sync,$s]+="$(peak_kib "" "${BIN[$s]}" --config "$dir/vzacct.conf" sync) "
      ip netns del "$NS"
      rm -rf "$dir"
    done
  done
  nodes_up
  for i in $(seq "$MEM_RUNS"); do
    ctid=$((910000 + i))
    for s in $(order "$i"); do
      on "$s"
      RAW[mem,dump,$s]+="$(peak_kib "" "${BIN[$s]}" --config "$CFG" dump) "
      RAW[mem,show,$s]+="$(peak_kib "" "${BIN[$s]}" --config "$CFG" show --json) "
      RAW[mem,status,$s]+="$(peak_kib "" "${BIN[$s]}" --config "$CFG" status) "
      RAW[mem,mount,$s]+="$(peak_kib "VEID=$ctid VE_STATE=starting IP_ADDR=$(hook_ips "$((100 + i))")" "${BIN[$s]}" --config "$CFG" hook net-add) "
      RAW[mem,umount,$s]+="$(peak_kib "VEID=$ctid" "${BIN[$s]}" --config "$CFG" hook umount) "
      RAW[mem,add,$s]+="$(peak_kib "" "${BIN[$s]}" --config "$CFG" add "$ctid" "10.5.0.$i" "10.6.0.$i") "
      RAW[mem,remove,$s]+="$(peak_kib "" "${BIN[$s]}" --config "$CFG" remove "$ctid") "
    done
  done
  for s in $SIDES; do on "$s"; expect "after the memory runs ($s)" "$(count_ours)" "$want"; done
  nodes_down
  R[load,mem]=$(loadavg)
fi

left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^$NS_PREFIX" || true)
[ "$left" -eq 0 ] || die "left $left namespace(s) behind"
for k in "${!RAW[@]}"; do log "runs $k (us or KiB): ${RAW[$k]}"; done

# --- report -------------------------------------------------------------------------------------
met() { awk -v a="$1" -v t="$2" 'BEGIN { print (a <= t) ? "met" : "**not met**" }'; }
# ROW LABEL TARGET KEY DIV: medians (min-max) of both sides, and whether after meets the target
row() {
  local label=$1 target=$2 key=$3 div=$4 s line a dec=0
  [ "$div" = 1000 ] || dec=1
  line="| $label | <= $target |"
  for s in $SIDES; do
    # shellcheck disable=SC2086
    line+=" $(median "$div" 1 ${RAW[$key,$s]}) ($(minmax "$div" "$dec" ${RAW[$key,$s]})) |"
  done
  # shellcheck disable=SC2086
  a=$(median "$div" 1 ${RAW[$key,after]})
  echo "$line $(met "$a" "$target") |"
}
echo "## Issue 13: before and after in one run (benches/before-after.sh)"
echo
echo "before = \`${REV[before]}\`, after = \`${REV[after]}\`; $(date -u +%F), $(nproc) CPUs, kernel $(uname -r), $(iptables-$VARIANT --version), $(ipset --version | head -1 | cut -d, -f1); $(printf '%s' "$N" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta') containers x 2 IPv4, backend = ipset. Both binaries timed in every run, one after the other, order alternating. Load average at the start $LOAD_START$(for p in hook dump bringup mem; do [ -n "${R[load,$p]:-}" ] && printf '; after %s %s' "$p" "${R[load,$p]}"; done)."
echo
echo "| median (min-max) | target | before | after | after vs target |"
echo "|---|---:|---:|---:|---|"
if part hook; then
  row "\`hook net-add\` ms ($HOOK_RUNS runs)" 10 mount 1000
  row "\`hook umount\` ms ($HOOK_RUNS runs)" 10 umount 1000
fi
if part dump; then
  row "\`dump\` ms ($CMD_RUNS runs)" 300 dump 1000
  row "\`show --json\` ms ($CMD_RUNS runs)" 200 show 1000
fi
if part bringup; then
  row "\`sync\` from empty ms ($CMD_RUNS runs)" 400 sync 1000
  row "\`restore\` at boot ms ($CMD_RUNS runs)" 400 restore 1000
fi
if part mem; then
  for c in $MEM_CMDS; do
    case $c in show) label="show --json" ;; mount) label="hook net-add" ;; umount) label="hook umount" ;; add) label="add (2 IPs)" ;; *) label=$c ;; esac
    row "peak RSS \`$label\` MiB ($MEM_RUNS runs)" 40 "mem,$c" 1024
  done
fi
echo
if part hook; then
  echo "Hooks that took the full run: before ${R[full,before]:-0}, after ${R[full,after]:-0} (of $((2 * HOOK_RUNS)) each)."
  echo
fi

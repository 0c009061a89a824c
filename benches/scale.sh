#!/usr/bin/env bash
# Issue 6, "fast at any node size": what accounting costs per forwarded packet, per vzctl
# event, per cron dump, at bring-up and in memory, with the ipset backend against the
# iptables backend and the wiki's linear rules. Everything runs inside throwaway network
# namespaces named vzb6-<pid>-<n>[-snd|-node|-rcv], all deleted on exit (trap); the host's
# firewall, its ipsets and any namespace this script did not create are never touched, and
# the only processes it ends are the iperf3 servers it started itself, by PID.
#
# Usage, as root, from anywhere:
#   bash benches/scale.sh >report.md          # Markdown on stdout, progress on stderr
#
# It builds the release binary (into $CARGO_TARGET_DIR, default <repo>/target) unless
# VZACCT_BIN is given. Knobs (environment), all optional:
#   PARTS="fwd hook dump bringup mem wiki breakdown profile"  what to measure (any subset)
#   VARIANT=nft            iptables flavour of parts hook..breakdown: nft or legacy
#   --- 1. forwarding cost ---
#   FWD_SIZES="0 100 1000 10000"  accounted IPs (one per container; the flow's destination is one)
#   FWD_VARIANTS="nft"     iptables flavours for the forwarding test ("nft legacy" for both)
#   FWD_RUNS=5             rounds; each round measures every configuration once (interleaved)
#   FWD_SECS=5             seconds per iperf3 run; the rate is taken over [0.7 s, FWD_SECS-0.3 s]
#   FWD_LEN=64             UDP payload bytes (IP packet = FWD_LEN + 28)
#   PIN=1                  sender pinned to CPU 0, receiver to CPU 1 (taskset); 0: not pinned
#   FWD_DETAIL=1           also a group at the largest size, first variant, that splits the ipset
#                          backend's per-packet cost: vzacct's set rules built by hand on sets
#                          without counters, with counters (no comment), and native nftables
#                          sets with per-element counters (needs nft, package nftables)
#   FWD_FREE=1             also a group per variant at the largest size for free networks
#                          ([classes], issue 14): backend = ipset without classes, then with
#                          FWD_FREE_NETS networks of 4 prefix lengths, the flow billable
#                          (free), and with the sender's network among them (freeflow);
#                          then (covered) FWD_FREE_NETS /16s scattered over the address
#                          space, so that the free rules' covers are wide and hold the
#                          sender: the flow billable, and each packet looked up (worst case)
#   FWD_FREE_NETS=100
#   FWD_CONFS="none wiki iptables ipset"  the configurations of the size table
#   --- 2..6 ---
#   N=10000                containers (2 IPv4 each) for hooks, dump, show, bring-up, memory
#   HOOK_RUNS=20           hook net-add + umount pairs per backend
#   CMD_RUNS=9             runs of dump, show --json, sync-from-empty, restore
#   MEM_RUNS=3             runs per command under /usr/bin/time -f %M
#   MEM_SMALL=1000         also the peak RSS of dump at this many containers, to show how it
#                          grows with the node (0 skips it)
#   WIKI_N=1000 WIKI_RUNS=3  one `iptables -A` per rule for WIKI_N containers (8 calls each)
#   BACKENDS="ipset iptables"
#   PROF_RUNS=5            runs per command for the profile part (perf stat + perf record)
#   VZACCT_BIN=path VZACCT_REV=text   time a prebuilt binary (e.g. from `git archive COMMIT`)
# Needs (Debian 12): bash, coreutils, util-linux (taskset), gawk/mawk, grep, sed, iproute2,
# iptables, ipset, iperf3, time (/usr/bin/time), perf (linux-perf; only for the profile part),
# cargo (unless VZACCT_BIN). About 15 minutes
# with the defaults on a 2-CPU machine (forwarding: ~7 min).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PARTS=${PARTS:-"fwd hook dump bringup mem wiki breakdown profile"}
PROF_RUNS=${PROF_RUNS:-5}
VARIANT=${VARIANT:-nft}
FWD_SIZES=${FWD_SIZES:-"0 100 1000 10000"}
FWD_VARIANTS=${FWD_VARIANTS:-nft}
FWD_RUNS=${FWD_RUNS:-5}
FWD_SECS=${FWD_SECS:-5}
FWD_LEN=${FWD_LEN:-64}
PIN=${PIN:-1}
FWD_DETAIL=${FWD_DETAIL:-1}
FWD_FREE=${FWD_FREE:-1}
FWD_FREE_NETS=${FWD_FREE_NETS:-100}
FWD_CONFS=${FWD_CONFS:-"none wiki iptables ipset"}
N=${N:-10000}
HOOK_RUNS=${HOOK_RUNS:-20}
CMD_RUNS=${CMD_RUNS:-9}
MEM_RUNS=${MEM_RUNS:-3}
MEM_SMALL=${MEM_SMALL:-1000}
WIKI_N=${WIKI_N:-1000}
WIKI_RUNS=${WIKI_RUNS:-3}
BACKENDS=${BACKENDS:-"ipset iptables"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

die() { echo "scale.sh: $*" >&2; exit 1; }
log() { echo "scale.sh: $(date +%T) $*" >&2; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

# --- checks ---------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, iptables, ipset)"
for v in $VARIANT $FWD_VARIANTS; do
  case $v in legacy | nft) ;; *) die "unknown iptables variant $v (legacy or nft)" ;; esac
  for p in iptables-$v-save iptables-$v-restore; do
    command -v "$p" >/dev/null || die "$p not found (Debian: apt-get install iptables)"
  done
done
for b in $BACKENDS; do case $b in ipset | iptables) ;; *) die "BACKENDS: unknown $b" ;; esac; done
for p in ip ipset awk sed grep sort taskset; do command -v "$p" >/dev/null || die "$p not found"; done
if part fwd; then command -v iperf3 >/dev/null || die "iperf3 not found (Debian: apt-get install iperf3)"; fi
if part mem; then [ -x /usr/bin/time ] || die "/usr/bin/time not found (Debian: apt-get install time)"; fi
for n in $FWD_SIZES $N $WIKI_N; do
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -le 62000 ] || die "sizes must be 0..62000, got $n"
done
[ "$N" -ge 1 ] || die "N must be at least 1"
[ "$FWD_SECS" -ge 2 ] || die "FWD_SECS must be at least 2"
[ "$(nproc)" -ge 2 ] || PIN=0

if [ -n "${VZACCT_BIN:-}" ]; then
  [ -x "$VZACCT_BIN" ] || die "VZACCT_BIN=$VZACCT_BIN is not executable"
  src=$VZACCT_BIN
  rev="${VZACCT_REV:-unknown} (prebuilt binary $VZACCT_BIN)"
else
  log "building the release binary into $CARGO_TARGET_DIR"
  cargo build --release --locked -q --manifest-path "$REPO/Cargo.toml"
  src=$CARGO_TARGET_DIR/release/vzacct
  if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
    [ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock)" ] || rev+=" + uncommitted changes"
  else
    rev="unknown (not a git checkout)"
  fi
fi

# --- namespaces, scratch space and servers: all removed on exit ---------------------------
NS_PREFIX=vzb6-$$-
NS_SEQ=0
NS=""
PIDS=()
WORK=$(mktemp -d /tmp/vzacct-scale.XXXXXX)
cleanup() {
  local p ns
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
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

# --- helpers --------------------------------------------------------------------------------
# Median of numbers, printed with D decimals after dividing by DIV.
median() { # DIV DECIMALS NUMBERS...
  local div=$1 dec=$2
  shift 2
  printf '%s\n' "$@" | sort -g | awk -v d="$div" -v p="$dec" '{a[NR] = $1} END {
    if (NR == 0) { print "n/a"; exit }
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.*f", p, m / d }'
}
minmax() { # DIV DECIMALS NUMBERS...: "min-max"
  local div=$1 dec=$2
  shift 2
  printf '%s\n' "$@" | sort -g | awk -v d="$div" -v p="$dec" '{a[NR] = $1} END {
    printf "%.*f-%.*f", p, a[1] / d, p, a[NR] / d }'
}
ms() { median 1000 1 "$@"; } # microseconds -> median ms
fmt_int() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
us_of() { local t=${1/./}; echo $((10#$t)); } # EPOCHREALTIME -> microseconds

# Run a command in the current namespace with a clean environment (PATH plus the given
# VAR=value words), timed inside the namespace (so `ip netns exec` is not counted). Prints
# microseconds; on failure shows the output and stops. Output goes to $WORK/out.
env_words() { # "VAR=x VAR2=a+b": the words, each "+" standing for a space (IP_ADDR lists)
  local w
  EW=()
  for w in $1; do EW+=("${w//+/ }"); done
}
timed() { # "VAR=x VAR2=y" CMD...
  env_words "$1"
  shift
  in_ns env -i PATH="$PATH" "${EW[@]}" bash -c '
    o=$1; shift
    s=$EPOCHREALTIME
    "$@" >"$o" 2>&1 || { rc=$?; cat "$o" >&2; exit "$rc"; }
    e=$EPOCHREALTIME
    echo $(( 10#${e/./} - 10#${s/./} ))' _ "$WORK/out" "$@" || die "failed in $NS: $*"
}
# Peak RSS in KiB of a command (and, as wait4 reports it, its largest child).
peak_kib() { # "VAR=x" CMD...
  env_words "$1"
  shift
  in_ns env -i PATH="$PATH" "${EW[@]}" /usr/bin/time -f %M -o "$WORK/mem" "$@" >"$WORK/out" 2>&1 ||
    { cat "$WORK/out" >&2; die "failed in $NS: $*"; }
  tail -1 "$WORK/mem"
}

# veinfo with host line and N containers (CTID 101...), two IPv4 each: 10.1.x.y and 10.2.x.y.
gen_veinfo() { # N FILE
  awk -v n="$1" 'BEGIN { print "       0     0     1"
    for (i = 0; i < n; i++) { x = int(i / 250); y = i % 250 + 1
      printf "%10d     0     1 10.1.%d.%d 10.2.%d.%d\n", i + 101, x, y, x, y } }' >"$2"
}
gen_config() { # DIR BACKEND VARIANT VEINFO [IPTABLES [IPSET]]
  mkdir -p "$1/conf"
  cat >"$1/vzacct.conf" <<CONF
[vzctl]
veinfo = $4
conf_dir = $1/conf
hook_log = $1/hook.log
strict = yes
[netfilter]
iptables = ${5:-iptables-$3}
ip6tables = ip6tables-$3
ipset = ${6:-ipset}
backend = $2
ipv6 = no
[storage]
state_dir = $1/state
csv_dir = $1/csv
CONF
}
# Counters of ours in the current namespace: set elements or tagged rules.
count_ours() { # BACKEND VARIANT
  if [ "$1" = ipset ]; then
    in_ns ipset save | grep -c '^add vzacct-.* comment "ct:' || true  # (not the generation elements)
  else
    in_ns "iptables-$2-save" -t filter | grep -c 'ct:' || true
  fi
}
expect() { [ "$2" -eq "$3" ] || die "$1: expected $3, found $2"; }
vz() { # CONFIG ARGS... (untimed)
  local cfg=$1
  shift
  in_ns env -i PATH="$PATH" "$VZACCT" --config "$cfg" "$@" >"$WORK/vz.out" 2>&1 ||
    { cat "$WORK/vz.out" >&2; die "vzacct $* failed in $NS"; }
}

declare -A R   # results
declare -A RAW # all samples, for stderr

# ============================================================================================
# 1. Forwarding cost: sender ns -> node ns (forwarding, accounting) -> receiver ns.
# ============================================================================================
# Addresses: sender 10.250.1.2/24, node 10.250.1.1 and 10.250.2.1, receiver 10.99.0.1/32 (the
# flow's destination, an accounted IP of the last container). The other accounted IPs are
# 10.1.x.y/32, one per container. The node always routes 10.99.0.1 and the 10.1.x.y of the
# largest size (as /32 routes to the receiver's veth, like venet routes on an OpenVZ node), so
# that only the accounting differs between configurations.
DEST=10.99.0.1
fwd_max=0
for n in $FWD_SIZES; do [ "$n" -gt "$fwd_max" ] && fwd_max=$n; done
fwd_ips() { # N: the N accounted IPs in order, the destination last
  awk -v n="$1" -v d="$DEST" 'BEGIN { for (i = 0; i < n - 1; i++) printf "10.1.%d.%d\n", int(i / 250), i % 250 + 1
    if (n > 0) print d }'
}
fwd_veinfo() { # N FILE: one container per accounted IP
  fwd_ips "$1" | awk 'BEGIN { print "       0     0     1" } { printf "%10d     0     1 %s\n", NR + 100, $1 }' >"$2"
}
# The wiki's way: -A FORWARD -d IP and -A FORWARD -s IP per IP, loaded in one restore.
fwd_wiki_batch() { # N FILE
  { echo "*filter"
    fwd_ips "$1" | awk '{ print "-A FORWARD -d " $1; print "-A FORWARD -s " $1 }'
    echo "COMMIT"; } >"$2"
}

SND="" NODE="" RCV=""
topo_up() {
  NS_SEQ=$((NS_SEQ + 1))
  SND=$NS_PREFIX$NS_SEQ-snd NODE=$NS_PREFIX$NS_SEQ-node RCV=$NS_PREFIX$NS_SEQ-rcv
  ip netns add "$SND"
  ip netns add "$NODE"
  ip netns add "$RCV"
  # veth pairs created inside the namespaces: nothing appears in the host's namespace.
  ip -n "$SND" link add vzb6s type veth peer name vzb6n1 netns "$NODE"
  ip -n "$RCV" link add vzb6r type veth peer name venet0 netns "$NODE"
  ip -n "$SND" link set lo up
  ip -n "$SND" addr add 10.250.1.2/24 dev vzb6s
  ip -n "$SND" link set vzb6s up
  ip -n "$SND" route add default via 10.250.1.1
  ip -n "$NODE" link set lo up
  ip -n "$NODE" addr add 10.250.1.1/24 dev vzb6n1
  ip -n "$NODE" addr add 10.250.2.1/32 dev venet0
  ip -n "$NODE" link set vzb6n1 up
  ip -n "$NODE" link set venet0 up
  ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$NODE" -batch "$WORK/fwd-routes"
  ip -n "$RCV" link set lo up
  ip -n "$RCV" addr add "$DEST/32" dev vzb6r
  ip -n "$RCV" link set vzb6r up
  ip -n "$RCV" route add 10.250.2.1/32 dev vzb6r
  ip -n "$RCV" route add default via 10.250.2.1
}
topo_down() {
  local ns
  for ns in "$SND" "$NODE" "$RCV"; do ip netns del "$ns" 2>/dev/null || true; done
  SND="" NODE="" RCV=""
}
pin() { [ "$PIN" = 1 ] && echo "taskset -c $1"; } # CPU -> prefix or nothing

# Put one configuration's accounting on the node; prints nothing.
fwd_setup() { # CONF VARIANT N
  local conf=$1 v=$2 n=$3 dir
  case $conf in
    none) ;;
    wiki)
      [ "$n" -gt 0 ] || return 0
      ip netns exec "$NODE" "iptables-$v-restore" --noflush <"$WORK/fwd-wiki-$n"
      ;;
    iptables | ipset)
      dir=$WORK/fwd-state
      rm -rf "$dir"
      gen_config "$dir" "$conf" "$v" "$WORK/fwd-veinfo-$n"
      NS=$NODE vz "$dir/vzacct.conf" sync
      ;;
    # Free networks: the ipset backend with [classes]; the flow billable, or free.
    free | freeflow | covered)
      dir=$WORK/fwd-state
      rm -rf "$dir"
      gen_config "$dir" ipset "$v" "$WORK/fwd-veinfo-$n"
      printf '[classes]\nfree = %s\n' "$(tr '\n' ' ' <"$WORK/fwd-nets-$conf")" >>"$dir/vzacct.conf"
      NS=$NODE vz "$dir/vzacct.conf" sync
      ;;
    # Detail group: what the ipset backend's per-packet cost is made of.
    dnone) ;;
    setnc | setc)
      # vzacct's four sets, elements and rules, built by hand: sets without counters
      # (setnc), or with counters but without the comment extension (setc).
      ip netns exec "$NODE" ipset restore <"$WORK/fwd-$conf-$n"
      ip netns exec "$NODE" "iptables-$v-restore" --noflush <"$WORK/fwd-setrules"
      ;;
    nftset)
      # Native nftables: two sets with per-element counters, looked up in a forward chain.
      ip netns exec "$NODE" nft -f "$WORK/fwd-nftset-$n"
      ;;
  esac
}
# Packets counted for the destination by the configuration's counter ("" if none).
fwd_counted() { # CONF VARIANT
  case $1 in
    none) echo "" ;;
    wiki) ip netns exec "$NODE" "iptables-$2-save" -c -t filter |
      awk -v d="-d $DEST/32" 'index($0, d) && / -A FORWARD / { gsub(/[\[\]]/, "", $1); split($1, c, ":"); print c[1] }' ;;
    iptables) ip netns exec "$NODE" "iptables-$2-save" -c -t filter |
      awk -v d="-d $DEST/32" 'index($0, d) && / -A VZACCT-FORWARD / { gsub(/[\[\]]/, "", $1); split($1, c, ":"); print c[1] }' ;;
    ipset | setc | free | freeflow | covered) ip netns exec "$NODE" ipset save vzacct-fi4 |
      awk -v d="$DEST" '$1 == "add" && $3 == d { for (i = 4; i < NF; i++) if ($i == "packets") print $(i + 1) }' ;;
    nftset) ip netns exec "$NODE" nft list set ip vzb6 fi | tr ',{}' '\n\n\n' |
      awk -v d="$DEST" '$1 == d { for (i = 2; i < NF; i++) if ($i == "packets") print $(i + 1) }' ;;
    *) echo "" ;;
  esac
}
# One iperf3 run; prints "pps total_rx counted". Returns 1 (after ending its servers) when
# the run broke, e.g. the namespaces vanished under it; the caller then tries again.
fwd_run() { # CONF VARIANT N
  local conf=$1 v=$2 n=$3 spid cpid win rx0 rx1 out counted ok=0
  ip netns exec "$RCV" $(pin 1) iperf3 -s -1 -p 5299 >"$WORK/iperf-s.log" 2>&1 &
  spid=$!
  PIDS+=("$spid")
  for _ in $(seq 50); do
    ip netns exec "$RCV" ss -Hltn 'sport = :5299' | grep -q . && break
    sleep 0.1
  done
  if rx0=$(ip netns exec "$RCV" cat /sys/class/net/vzb6r/statistics/rx_packets); then
    ip netns exec "$SND" $(pin 0) iperf3 -c "$DEST" -p 5299 -u -b 0 -l "$FWD_LEN" -t "$FWD_SECS" \
      >"$WORK/iperf-c.log" 2>&1 &
    cpid=$!
    PIDS+=("$cpid")
    # Steady-state window, sampled by one shell in the receiver (builtins only: no forks
    # between the clock and the counter).
    win=$(awk -v s="$FWD_SECS" 'BEGIN { printf "%.1f", s - 1.0 }')
    out=$(ip netns exec "$RCV" bash -c '
      f=/sys/class/net/vzb6r/statistics/rx_packets
      sleep 0.7; read -r a <"$f" || exit 1; s=$EPOCHREALTIME
      sleep "$1"; read -r b <"$f" || exit 1; e=$EPOCHREALTIME
      echo "$a $b $(( 10#${s/./} )) $(( 10#${e/./} ))"' _ "$win") && ok=1
    wait "$cpid" || { cat "$WORK/iperf-c.log" >&2; ok=0; }
  fi
  # The server exits after one test; give it a moment, then end it (it is ours).
  for _ in $(seq 30); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  PIDS=()
  [ "$ok" = 1 ] || return 1
  rx1=$(ip netns exec "$RCV" cat /sys/class/net/vzb6r/statistics/rx_packets) || return 1
  counted=$(fwd_counted "$conf" "$v") || return 1
  echo "$out" | awk -v t0="$rx0" -v t1="$rx1" -v c="${counted:--}" \
    '{ printf "%.0f %d %s\n", ($2 - $1) / (($4 - $3) / 1e6), t1 - t0, c }'
}

if part fwd; then
  # Routes for the largest size (shared by every configuration), the veinfo files and batches.
  fwd_ips "$fwd_max" | awk '{ print "route add " $1 "/32 dev venet0" }' >"$WORK/fwd-routes"
  [ "$fwd_max" -gt 0 ] || echo "route add $DEST/32 dev venet0" >"$WORK/fwd-routes"
  for n in $FWD_SIZES; do
    fwd_veinfo "$n" "$WORK/fwd-veinfo-$n"
    fwd_wiki_batch "$n" "$WORK/fwd-wiki-$n"
  done
  if [ "$FWD_FREE" = 1 ]; then
    # FWD_FREE_NETS networks in 4 prefix lengths (/16 /20 /22 /24: a hash:net lookup costs a
    # hash per prefix length in the set), none holding the sender (10.250.1.2) or a
    # container; for freeflow the last one is the sender's /24.
    # FWD_FREE_LENS=24: all of them /24s (one prefix length: one hash per lookup).
    awk -v n="$FWD_FREE_NETS" -v only="${FWD_FREE_LENS:-}" 'BEGIN { for (i = 0; i < n; i++) { k = int(i / 4)
        if (only == 24) printf "192.%d.%d.0/24\n", 168 + int(i / 256), i % 256
        else if (i % 4 == 0) printf "172.%d.0.0/16\n", 16 + k % 16 + 32 * int(k / 16)
        else if (i % 4 == 1) printf "100.%d.%d.0/20\n", 64 + int(k / 16), (k % 16) * 16
        else if (i % 4 == 2) printf "100.%d.%d.0/22\n", 96 + int(k / 64), (k % 64) * 4
        else printf "192.168.%d.0/24\n", k % 256 } }' >"$WORK/fwd-nets-free"
    { head -n $((FWD_FREE_NETS - 1)) "$WORK/fwd-nets-free"; echo 10.250.1.0/24; } >"$WORK/fwd-nets-freeflow"
    # Scattered: /16s with odd first octets (1.0.0.0/16, 3.1.0.0/16, ...): no cover of at
    # most four prefixes can leave out the sender's 10.250.1.2 without leaving out a network.
    awk -v n="$FWD_FREE_NETS" 'BEGIN { for (i = 0; i < n; i++) printf "%d.%d.0.0/16\n", 1 + 2 * (i % 100), int(i / 100) }' >"$WORK/fwd-nets-covered"
  fi
  if [ "$FWD_DETAIL" = 1 ]; then
    for c in setnc setc; do
      ext=""
      [ "$c" = setc ] && ext=" counters"
      fwd_ips "$fwd_max" | awk -v ext="$ext" 'BEGIN { split("fi fo li lo", k, " ")
          for (j = 1; j <= 4; j++) print "create vzacct-" k[j] "4 hash:ip family inet hashsize 1024 maxelem 1048576" ext }
        { for (j = 1; j <= 4; j++) print "add vzacct-" k[j] "4 " $1 }' >"$WORK/fwd-$c-$fwd_max"
    done
    cat >"$WORK/fwd-setrules" <<'RULES'
*filter
:VZACCT-FORWARD - [0:0]
:VZACCT-INPUT - [0:0]
:VZACCT-OUTPUT - [0:0]
-A INPUT -j VZACCT-INPUT
-A FORWARD -j VZACCT-FORWARD
-A OUTPUT -j VZACCT-OUTPUT
-A VZACCT-FORWARD -o venet0 -m set --match-set vzacct-fi4 dst
-A VZACCT-FORWARD -i venet0 -m set --match-set vzacct-fo4 src
-A VZACCT-INPUT -i venet0 -m set --match-set vzacct-lo4 src
-A VZACCT-OUTPUT -o venet0 -m set --match-set vzacct-li4 dst
COMMIT
RULES
    { echo "table ip vzb6 {"
      echo "  set fi { type ipv4_addr; counter; }"
      echo "  set fo { type ipv4_addr; counter; }"
      echo "  chain forward { type filter hook forward priority 0; oifname \"venet0\" ip daddr @fi; iifname \"venet0\" ip saddr @fo; }"
      echo "}"
      for set in fi fo; do
        fwd_ips "$fwd_max" | awk -v s="$set" '{ printf "add element ip vzb6 %s { %s }\n", s, $1 }'
      done; } >"$WORK/fwd-nftset-$fwd_max"
  fi
  # Configurations, measured once per round in this order.
  # Each group (variant, size) starts with its own no-accounting run, the reference for the
  # group's ratios: the machine's speed drifts with the neighbours' load within a round.
  confs=()
  for v in $FWD_VARIANTS; do
    for n in $FWD_SIZES; do
      for c in $FWD_CONFS; do
        [ "$c" = wiki ] && [ "$n" -eq 0 ] && continue
        confs+=("$c $v $n")
      done
    done
    if [ "$FWD_FREE" = 1 ]; then
      for c in none ipset free freeflow covered; do confs+=("$c $v $fwd_max free"); done
    fi
  done
  DV=${FWD_VARIANTS%% *}
  if [ "$FWD_DETAIL" = 1 ]; then
    for c in dnone setnc setc nftset; do
      [ "$c" = nftset ] && ! command -v nft >/dev/null && continue
      confs+=("$c $DV $fwd_max")
    done
  fi
  log "forwarding: ${#confs[@]} configurations x $FWD_RUNS rounds x ${FWD_SECS} s"
  for r in $(seq "$FWD_RUNS"); do
    for cfg in "${confs[@]}"; do
      read -r c v n group <<<"$cfg"
      topo_up
      fwd_setup "$c" "$v" "$n"
      # Not in $(...): PIDS must be this shell's. A broken run is repeated, twice at most.
      tries=1
      until fwd_run "$c" "$v" "$n" >"$WORK/fwd.res"; do
        [ "$tries" -lt 3 ] || die "forwarding $cfg failed $tries times"
        log "forwarding $cfg: the run broke (see above), trying again in fresh namespaces"
        tries=$((tries + 1))
        topo_down
        topo_up
        fwd_setup "$c" "$v" "$n"
      done
      read -r pps rx counted <"$WORK/fwd.res"
      free_counted=""
      case $c in free | freeflow | covered)
        free_counted=$(ip netns exec "$NODE" ipset save vzacct-ffi4 |
          awk -v d="$DEST" '$1 == "add" && $3 == d { for (i = 4; i < NF; i++) if ($i == "packets") print $(i + 1) }')
        ;;
      esac
      topo_down
      if [ "$c" != none ] && [ "$c" != dnone ] && [ "$c" != setnc ] && [ "$n" -gt 0 ]; then
        # The counting path must have been taken: the destination's counter saw the flow.
        [ "$counted" != - ] && [ "$counted" -ge $((rx * 99 / 100)) ] ||
          die "forwarding $cfg: destination counted $counted packets, receiver got $rx"
      fi
      key="$c,$v,$n"
      [ -n "${group:-}" ] && key+=",$group"
      RAW[fwd,$key]+="$pps "
      RAW[fwdratio,$key]+="$(awk -v a="$counted" -v b="$rx" 'BEGIN { if (a == "-") print "-"; else printf "%.4f", a / b }') "
      case $c in none | dnone) base_this_round=$pps ;; ipset) ipset_this_round=$pps ;; esac
      RAW[fwdrel,$key]+="$(awk -v a="$pps" -v b="$base_this_round" 'BEGIN { printf "%.4f", a / b }') "
      case $c in free | freeflow | covered)
        RAW[fwdvsipset,$key]+="$(awk -v a="$pps" -v b="$ipset_this_round" 'BEGIN { printf "%.4f", a / b }') "
        # The flow is counted as free exactly when it is (all of it, or none).
        if [ "$c" = freeflow ]; then
          [ "${free_counted:-0}" -eq "$counted" ] || die "forwarding $cfg: $counted packets counted, $free_counted of them free"
        else
          [ "${free_counted:-0}" -eq 0 ] || die "forwarding $cfg: $free_counted packets counted as free"
        fi
        ;;
      esac
      log "forwarding round $r: $c ($v, $n IPs): $pps packets/s (received $rx, counted ${counted})"
    done
  done
fi

# ============================================================================================
# Node with N containers (2 IPs each) for parts 2..5 and the breakdown.
# ============================================================================================
gen_veinfo "$N" "$WORK/veinfo-$N"
ips_per=2
want=$((4 * ips_per * N)) # counters of ours: 4 per IP (set elements or rules)

# A node with N containers accounted and one dump done: prints nothing; sets NS and DIR.
DIR=""
node_up() { # BACKEND [IPTABLES [IPSET]]
  DIR=$WORK/node-$1-$NS_SEQ
  gen_config "$DIR" "$1" "$VARIANT" "$WORK/veinfo-$N" "${2:-}" "${3:-}"
  new_ns
  vz "$DIR/vzacct.conf" sync
  vz "$DIR/vzacct.conf" dump
  expect "bring-up of $N containers ($1)" "$(count_ours "$1" "$VARIANT")" "$want"
}
node_down() { drop_ns; rm -rf "$DIR"; }
ct_bucket_file() { # CTID: its ledger bucket file (FNV-1a hash of the text, modulo 64)
  local t=$1 h=2166136261 i c
  for ((i = 0; i < ${#t}; i++)); do
    printf -v c '%d' "'${t:i:1}"
    h=$(((h ^ c) * 16777619 % 4294967296))
  done
  printf 'ct-%02x.json' $((h % 64))
}
hook_ips() { # I: the two IPs of hook container I, as vzctl's IP_ADDR ("a b"; "+" for the space, see env_words)
  printf '10.3.%d.%d+10.4.%d.%d' $(($1 / 250)) $(($1 % 250 + 1)) $(($1 / 250)) $(($1 % 250 + 1))
}
hook_conf() { # CTID I: a vzctl config with two IPs
  local i=$2
  printf 'IP_ADDRESS="10.3.%d.%d 10.4.%d.%d"\n' $((i / 250)) $((i % 250 + 1)) $((i / 250)) $((i % 250 + 1)) \
    >"$DIR/conf/$1.conf"
}

# --- 2. hook latency ------------------------------------------------------------------------
if part hook; then
  for b in $BACKENDS; do
    node_up "$b"
    m=() u=() full=0
    for i in $(seq "$HOOK_RUNS"); do
      ctid=$((900000 + i))
      hook_conf "$ctid" "$i"
      m+=("$(timed "VEID=$ctid VE_STATE=starting IP_ADDR=$(hook_ips "$i")" "$VZACCT" --config "$DIR/vzacct.conf" hook net-add)")
      grep -q "hook net-add: VE_STATE=starting accounting" "$WORK/out" || { cat "$WORK/out" >&2; die "hook net-add did not account"; }
      grep -q "full run" "$WORK/out" && full=$((full + 1))
      [ "$i" -eq 1 ] && expect "after hook net-add ($b)" "$(count_ours "$b" "$VARIANT")" $((want + 8))
      u+=("$(timed "VEID=$ctid" "$VZACCT" --config "$DIR/vzacct.conf" hook umount)")
      grep -q "hook umount: stopped accounting" "$WORK/out" || { cat "$WORK/out" >&2; die "hook umount did not stop"; }
      grep -q "full run" "$WORK/out" && full=$((full + 1))
    done
    # With ipset, umount of an address no longer routed to venet (as after vzctl's
    # vps-net_del; the bench node has no route to these) leaves the elements to the next
    # dump, which harvests and removes them.
    vz "$DIR/vzacct.conf" dump
    expect "after $HOOK_RUNS hook pairs and a dump ($b)" "$(count_ours "$b" "$VARIANT")" "$want"
    R[full,$b]=$full
    R[mount,$b]=$(ms "${m[@]}") R[mount_r,$b]=$(minmax 1000 0 "${m[@]}")
    R[umount,$b]=$(ms "${u[@]}") R[umount_r,$b]=$(minmax 1000 0 "${u[@]}")
    # The ledger: an SQLite database (ledger.sqlite), or before it a directory of buckets.
    R[ledger,$b]=$( (du -sbc "$DIR/state/ledger" "$DIR/state"/ledger.sqlite* 2>/dev/null || true) | tail -1 | cut -f1)
    R[bucket,$b]=$( (du -b "$DIR/state/ledger/$(ct_bucket_file 900001)" 2>/dev/null || echo "- (one database)") | cut -f1)
    log "hooks ($b): mount ${R[mount,$b]} ms (${m[*]} us), umount ${R[umount,$b]} ms (${u[*]} us)"
    node_down
  done
fi

# --- 3. dump and show --json ----------------------------------------------------------------
if part dump; then
  for b in $BACKENDS; do
    node_up "$b"
    d=() s=()
    for i in $(seq "$CMD_RUNS"); do
      d+=("$(timed "" "$VZACCT" --config "$DIR/vzacct.conf" dump)")
      s+=("$(timed "" "$VZACCT" --config "$DIR/vzacct.conf" show --json)")
    done
    [ "$(grep -o '"ctid"' "$WORK/out" | wc -l)" -eq "$N" ] || die "show --json did not list $N containers"
    R[dump,$b]=$(ms "${d[@]}") R[dump_r,$b]=$(minmax 1000 0 "${d[@]}")
    R[show,$b]=$(ms "${s[@]}") R[show_r,$b]=$(minmax 1000 0 "${s[@]}")
    R[showbytes,$b]=$(stat -c %s "$WORK/out")
    log "dump ($b): ${R[dump,$b]} ms (${d[*]} us); show --json: ${R[show,$b]} ms (${s[*]} us)"
    node_down
  done
fi

# --- 4. bring-up from empty: sync from veinfo; restore of a dumped ledger --------------------
if part bringup; then
  for b in $BACKENDS; do
    # A ledger of N containers as the last dump before a reboot left it.
    node_up "$b"
    cp -a "$DIR/state" "$WORK/saved-state-$b"
    node_down
    sy=() rs=()
    for i in $(seq "$CMD_RUNS"); do
      dir=$WORK/bu-$b-$i
      gen_config "$dir" "$b" "$VARIANT" "$WORK/veinfo-$N"
      new_ns
      sy+=("$(timed "" "$VZACCT" --config "$dir/vzacct.conf" sync)")
      expect "sync from empty ($b, run $i)" "$(count_ours "$b" "$VARIANT")" "$want"
      drop_ns
      rm -rf "$dir/state"
      cp -a "$WORK/saved-state-$b" "$dir/state"
      echo "00000000-0000-4000-8000-$(printf '%012d' "$i")" >"$dir/boot_id" # a new boot
      new_ns
      rs+=("$(timed "VZACCT_BOOT_ID_FILE=$dir/boot_id" "$VZACCT" --config "$dir/vzacct.conf" restore)")
      expect "restore ($b, run $i)" "$(count_ours "$b" "$VARIANT")" "$want"
      drop_ns
      rm -rf "$dir"
    done
    R[sync,$b]=$(ms "${sy[@]}") R[sync_r,$b]=$(minmax 1000 0 "${sy[@]}")
    R[restore,$b]=$(ms "${rs[@]}") R[restore_r,$b]=$(minmax 1000 0 "${rs[@]}")
    log "bring-up ($b): sync ${R[sync,$b]} ms (${sy[*]} us); restore ${R[restore,$b]} ms (${rs[*]} us)"
    rm -rf "$WORK/saved-state-$b"
  done
fi

# --- 5. memory -------------------------------------------------------------------------------
MEM_CMDS="sync dump show status mount umount add remove"
if part mem; then
  for b in $BACKENDS; do
    declare -A K=()
    for i in $(seq "$MEM_RUNS"); do
      # sync from empty, in a fresh namespace with an empty state dir
      dir=$WORK/mem-$b-$i
      gen_config "$dir" "$b" "$VARIANT" "$WORK/veinfo-$N"
      new_ns
      K[sync]+="$(peak_kib "" "$VZACCT" --config "$dir/vzacct.conf" sync) "
      drop_ns
      rm -rf "$dir"
    done
    node_up "$b"
    cfg=$DIR/vzacct.conf
    for i in $(seq "$MEM_RUNS"); do
      ctid=$((910000 + i))
      hook_conf "$ctid" "$((100 + i))"
      K[dump]+="$(peak_kib "" "$VZACCT" --config "$cfg" dump) "
      K[show]+="$(peak_kib "" "$VZACCT" --config "$cfg" show --json) "
      K[status]+="$(peak_kib "" "$VZACCT" --config "$cfg" status) "
      K[mount]+="$(peak_kib "VEID=$ctid VE_STATE=starting IP_ADDR=$(hook_ips "$((100 + i))")" "$VZACCT" --config "$cfg" hook net-add) "
      K[umount]+="$(peak_kib "VEID=$ctid" "$VZACCT" --config "$cfg" hook umount) "
      K[add]+="$(peak_kib "" "$VZACCT" --config "$cfg" add "$ctid" "10.5.0.$i" "10.6.0.$i") "
      K[remove]+="$(peak_kib "" "$VZACCT" --config "$cfg" remove "$ctid") "
    done
    expect "after the memory runs ($b)" "$(count_ours "$b" "$VARIANT")" "$want"
    # The children vzacct runs, alone (wait4's peak RSS is the largest of a process tree).
    K[ipsetsave]=$(peak_kib "" ipset save)
    K[iptsave]=$(peak_kib "" "iptables-$VARIANT-save" -c -t filter)
    for c in $MEM_CMDS; do
      # shellcheck disable=SC2086
      R[mem,$c,$b]=$(median 1024 1 ${K[$c]})
      # shellcheck disable=SC2086
      R[memmax,$c,$b]=$(printf '%s\n' ${K[$c]} | sort -n | tail -1 | awk '{ printf "%.1f", $1 / 1024 }')
      log "peak RSS ($b) $c: ${K[$c]}KiB"
    done
    R[mem,ipsetsave,$b]=$(awk -v k="${K[ipsetsave]}" 'BEGIN { printf "%.1f", k / 1024 }')
    R[mem,iptsave,$b]=$(awk -v k="${K[iptsave]}" 'BEGIN { printf "%.1f", k / 1024 }')
    node_down
    if [ "$MEM_SMALL" -gt 0 ]; then
      # The same node at MEM_SMALL containers: dump's peak RSS, for the growth per container.
      gen_veinfo "$MEM_SMALL" "$WORK/veinfo-$MEM_SMALL"
      dir=$WORK/mems-$b
      gen_config "$dir" "$b" "$VARIANT" "$WORK/veinfo-$MEM_SMALL"
      new_ns
      vz "$dir/vzacct.conf" sync
      vz "$dir/vzacct.conf" dump
      small=()
      for i in $(seq "$MEM_RUNS"); do small+=("$(peak_kib "" "$VZACCT" --config "$dir/vzacct.conf" dump)"); done
      drop_ns
      rm -rf "$dir"
      R[mem,small,$b]=$(median 1024 1 "${small[@]}")
    fi
    unset K
  done
fi

# --- 6. against the wiki's method: one iptables call per rule -------------------------------
if part wiki && [ "$WIKI_N" -gt 0 ]; then
  gen_veinfo "$WIKI_N" "$WORK/veinfo-$WIKI_N"
  w=()
  for i in $(seq "$WIKI_RUNS"); do
    new_ns
    # One shell in the namespace runs the loop, as the wiki's script would on the node.
    w+=("$(timed "" bash -c '
      set -e
      ipt=$1
      while read -r id _ _ ips; do
        [ "$id" = 0 ] && continue
        for ip in $ips; do
          "$ipt" -w -A FORWARD -d "$ip"
          "$ipt" -w -A FORWARD -s "$ip"
          "$ipt" -w -A INPUT -i venet0 -s "$ip"
          "$ipt" -w -A OUTPUT -o venet0 -d "$ip"
        done
      done <"$2"' wiki "iptables-$VARIANT" "$WORK/veinfo-$WIKI_N")")
    got=$(in_ns "iptables-$VARIANT-save" -t filter | grep -c '^-A ' || true)
    expect "one call per rule, run $i" "$got" $((8 * WIKI_N))
    drop_ns
  done
  R[wiki]=$(ms "${w[@]}") R[wiki_r]=$(minmax 1000 0 "${w[@]}")
  log "one call per rule, $WIKI_N containers: ${R[wiki]} ms (${w[*]} us)"
  for b in $BACKENDS; do
    s=()
    for i in $(seq "$CMD_RUNS"); do
      dir=$WORK/wk-$b-$i
      gen_config "$dir" "$b" "$VARIANT" "$WORK/veinfo-$WIKI_N"
      new_ns
      s+=("$(timed "" "$VZACCT" --config "$dir/vzacct.conf" sync)")
      expect "sync of $WIKI_N ($b)" "$(count_ours "$b" "$VARIANT")" $((8 * WIKI_N))
      drop_ns
      rm -rf "$dir"
    done
    R[wsync,$b]=$(ms "${s[@]}") R[wsync_r,$b]=$(minmax 1000 0 "${s[@]}")
    log "sync of $WIKI_N ($b): ${R[wsync,$b]} ms (${s[*]} us)"
  done
fi

# --- breakdown: where each command's time goes, with the children timed by wrappers ---------
# vzacct's configured programs point at tiny wrappers that log each real call's wall time.
make_wrappers() {
  local d=$WORK/wrap p real
  mkdir -p "$d"
  for p in "iptables-$VARIANT-save" "iptables-$VARIANT-restore" ipset; do
    real=$(command -v "$p")
    cat >"$d/$p" <<WRAP
#!/bin/bash
s=\$EPOCHREALTIME
rc=0
"$real" "\$@" || rc=\$?
e=\$EPOCHREALTIME
n=$p
[ "\$n" = ipset ] && n="ipset-\$1"
echo "\$n \$(( 10#\${e/./} - 10#\${s/./} ))" >>"$d/log"
exit \$rc
WRAP
    chmod +x "$d/$p"
  done
}
BD_CMDS="sync restore dump show status mount umount add"
if part breakdown; then
  make_wrappers
  W=$WORK/wrap
  # What one wrapper adds (bash start): the same cheap call with and without it.
  new_ns
  direct=() wrapped=()
  for i in $(seq 9); do
    direct+=("$(timed "" ipset list -n)")
    wrapped+=("$(timed "" "$W/ipset" list -n)")
  done
  drop_ns
  R[wrap]=$(awk -v w="$(median 1 0 "${wrapped[@]}")" -v d="$(median 1 0 "${direct[@]}")" 'BEGIN { printf "%d", w - d }')
  for b in $BACKENDS; do
    declare -A T=() C=()
    # One run of CMD with the wrappers: total, then each child program's time from the log.
    bd() { # NAME "ENVS" ARGS...
      local name=$1 envs=$2 t k v
      shift 2
      : >"$W/log"
      t=$(timed "$envs" "$VZACCT" --config "$DIR/wrapped.conf" "$@")
      T[$name,total]+="$t "
      local calls=0 kids=0
      for k in "iptables-$VARIANT-save" "iptables-$VARIANT-restore" ipset-save ipset-restore; do
        v=$(awk -v p="$k" '$1 == p { s += $2 } END { print s + 0 }' "$W/log")
        T[$name,$k]+="$v "
        kids=$((kids + v))
      done
      calls=$(wc -l <"$W/log")
      C[$name]=$calls
      T[$name,rest]+="$((t - kids - calls * ${R[wrap]})) "
    }
    for i in $(seq "$CMD_RUNS"); do
      # sync from empty and restore in fresh namespaces
      DIR=$WORK/bd-$b-$i
      gen_config "$DIR" "$b" "$VARIANT" "$WORK/veinfo-$N" "$W/iptables-$VARIANT" "$W/ipset"
      cp "$DIR/vzacct.conf" "$DIR/wrapped.conf"
      new_ns
      bd sync "" sync
      vz "$DIR/vzacct.conf" dump
      drop_ns
      echo "00000000-0000-4000-8000-$(printf '%012d' "$i")" >"$DIR/boot_id"
      new_ns
      bd restore "VZACCT_BOOT_ID_FILE=$DIR/boot_id" restore
      expect "wrapped restore ($b)" "$(count_ours "$b" "$VARIANT")" "$want"
      drop_ns
      rm -rf "$DIR"
    done
    node_up "$b"
    gen_config "$DIR" "$b" "$VARIANT" "$WORK/veinfo-$N" "$W/iptables-$VARIANT" "$W/ipset"
    mv "$DIR/vzacct.conf" "$DIR/wrapped.conf"
    gen_config "$DIR" "$b" "$VARIANT" "$WORK/veinfo-$N"
    for i in $(seq "$CMD_RUNS"); do
      ctid=$((920000 + i))
      hook_conf "$ctid" "$((200 + i))"
      bd dump "" dump
      bd show "" show --json
      bd status "" status
      bd mount "VEID=$ctid VE_STATE=starting IP_ADDR=$(hook_ips "$i")" hook net-add
      bd umount "VEID=$ctid" hook umount
      bd add "" add "$ctid" "10.7.0.$i" "10.8.0.$i"
      vz "$DIR/vzacct.conf" remove "$ctid"
    done
    expect "after the breakdown runs ($b)" "$(count_ours "$b" "$VARIANT")" "$want"
    # The children alone on this node, and the sizes they and the ledger handle.
    a=() z=()
    for i in $(seq "$CMD_RUNS"); do
      a+=("$(timed "" ipset save)")
      z+=("$(timed "" "iptables-$VARIANT-save" -c -t filter)")
    done
    R[bd_ipsetsave,$b]=$(ms "${a[@]}")
    R[bd_iptsave,$b]=$(ms "${z[@]}")
    R[bd_ipsetbytes,$b]=$(in_ns ipset save | wc -c)
    R[bd_iptbytes,$b]=$(in_ns "iptables-$VARIANT-save" -c -t filter | wc -c)
    R[bd_ledger,$b]=$(du -sb "$DIR/state/ledger" | cut -f1)
    for c in $BD_CMDS; do
      for k in total "iptables-$VARIANT-save" "iptables-$VARIANT-restore" ipset-save ipset-restore rest; do
        # shellcheck disable=SC2086
        R[bd,$c,$k,$b]=$(ms ${T[$c,$k]})
      done
      R[bd,$c,calls,$b]=${C[$c]}
      log "breakdown ($b) $c: total ${T[$c,total]}us; rest ${T[$c,rest]}us"
    done
    node_down
    unset T C
  done
fi

# --- profile: where vzacct's own CPU goes (perf) -----------------------------------------------
PROF_CMDS="mount dump show"
# Inclusive share of vzacct's CPU samples per top-level step (function names of the source).
PROF_FUNCS="vzacct::commands::begin vzacct::ledger::store::Locked::load vzacct::ledger::Ledger::harvest vzacct::backend::Kernel::read vzacct::backend::ipset::parse_save vzacct::backend::Kernel::counted vzacct::commands::commit vzacct::backend::Kernel::plan vzacct::backend::ipset::plan vzacct::backend::iptables::plan vzacct::backend::Kernel::apply vzacct::ledger::store::Locked::save"
if part profile; then
  command -v perf >/dev/null || die "perf not found (Debian: apt-get install linux-perf), or leave profile out of PARTS"
  for b in $BACKENDS; do
    node_up "$b"
    cfg=$DIR/vzacct.conf
    for c in $PROF_CMDS; do
      case $c in
        mount) args="hook mount" ;;
        show) args="show --json" ;;
        *) args=$c ;;
      esac
      # vzacct's own CPU (children excluded), PROF_RUNS runs; then one perf record of as many.
      cpu=()
      for i in $(seq "$PROF_RUNS"); do
        ctid=$((930000 + i))
        hook_conf "$ctid" "$((300 + i))"
        # shellcheck disable=SC2086
        in_ns env -i PATH="$PATH" VEID=$ctid VE_CONFFILE="$DIR/conf/$ctid.conf" \
          perf stat --no-inherit -x, -e task-clock -o "$WORK/stat" "$VZACCT" --config "$cfg" $args >"$WORK/out" 2>&1 ||
          { cat "$WORK/out" >&2; die "perf stat of $args failed"; }
        cpu+=("$(awk -F, '$3 ~ /task-clock/ { printf "%d", $1 * 1000 }' "$WORK/stat")")
        [ "$c" = mount ] && vz "$cfg" remove "$ctid"
      done
      # One perf record around a loop of PROF_RUNS runs (new CTIDs for mount).
      # shellcheck disable=SC2086
      in_ns env -i PATH="$PATH" perf record -q -F 999 --call-graph dwarf -o "$WORK/perf.data" -- \
        bash -c 'n=$1 confdir=$2; shift 2
          for i in $(seq "$n"); do
            VEID=$((940000 + i)) VE_CONFFILE=$confdir/$((930000 + i)).conf "$@" >/dev/null || exit 1
          done' _ "$PROF_RUNS" "$DIR/conf" "$VZACCT" --config "$cfg" $args \
        >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; die "perf record of $args failed"; }
      if [ "$c" = mount ]; then for i in $(seq "$PROF_RUNS"); do vz "$cfg" remove $((940000 + i)); done; fi
      # Share of all samples taken in the vzacct process (perf may list one comm on several
      # lines), then each step's inclusive share.
      all=$(perf report -i "$WORK/perf.data" --no-children --sort comm -g none 2>/dev/null |
        awk '$2 == "vzacct" { sub(/%/, "", $1); s += $1 } END { print s + 0 }')
      log "profile ($b) $c: $(perf report -i "$WORK/perf.data" --no-children --sort comm -g none 2>/dev/null |
        awk '$1 ~ /%$/ { printf "%s %s; ", $2, $1 }')"
      perf report -i "$WORK/perf.data" --comm vzacct --children --sort symbol -g none 2>/dev/null |
        awk '$3 == "[.]" { sub(/%/, "", $1); print $4, $1 }' >"$WORK/prof"
      for f in $PROF_FUNCS; do
        R[prof,$c,$f,$b]=$(awk -v f="$f" -v a="${all:-0}" '$1 == f && a > 0 { printf "%.0f", 100 * $2 / a; found = 1 }
          END { if (!found) print "-" }' "$WORK/prof")
      done
      rm -f "$WORK/perf.data" "$WORK/perf.data.old"
      R[pcpu,$c,$b]=$(ms "${cpu[@]}")
    done
    node_down
  done
fi

# ============================================================================================
# Report
# ============================================================================================
left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^$NS_PREFIX" || true)
[ "$left" -eq 0 ] || die "left $left namespace(s) behind"
load=$(cut -d' ' -f1-3 /proc/loadavg)
met() { awk -v a="$1" -v t="$2" -v op="$3" 'BEGIN {
  ok = (op == "<") ? (a < t) : (a >= t); print ok ? "**met**" : "**not met**" }'; }
bcols() { local b; for b in $BACKENDS; do printf ' %s |' "${R[$1,$b]:-n/a}"; done; }
bhead() {
  local b
  printf '| %s |' "$1"
  for b in $BACKENDS; do printf ' backend = %s |' "$b"; done
  printf '\n|---|'
  for b in $BACKENDS; do printf -- '---:|'; done
  printf '\n'
}

echo "## Issue 6 benchmark (benches/scale.sh)"
echo
echo "vzacct $rev; $(nproc) CPUs, kernel $(uname -r), $(for v in $(echo "$VARIANT $FWD_VARIANTS" | tr ' ' '\n' | sort -u); do "iptables-$v" --version; done | paste -sd, | sed 's/,/, /g'), $(ipset --version | head -1 | cut -d, -f1), $(iperf3 --version 2>/dev/null | head -1 | cut -d' ' -f1-2); load average at the end $load."
echo

if part fwd; then
  echo "### 1. Forwarding cost"
  echo
  echo "UDP, ${FWD_LEN}-byte payload ($((FWD_LEN + 28))-byte IP packets), \`iperf3 -u -b 0 -l $FWD_LEN -t $FWD_SECS\`, sender namespace -> node namespace (forwards, accounts) -> receiver namespace over veth pairs$([ "$PIN" = 1 ] && echo ", sender pinned to CPU 0 and receiver to CPU 1"). Packets/s arriving at the receiver's veth between 0.7 s and $((FWD_SECS - 1)).7 s, median of $FWD_RUNS rounds; each round measures every configuration once, in fresh namespaces, each row's four right after one another (no accounting first). In parentheses: the median over rounds of the rate relative to the no-accounting run just before it (same round, same row). (a) has no netfilter table at all in the node. The flow's destination $DEST is one of the N accounted IPs (the last); the N-1 others are 10.1.x.y/32 (one container each). The node routes all $(fmt_int "$fwd_max") of them as /32s in every configuration."
  echo
  for v in $FWD_VARIANTS; do
    echo "| accounted IPs (iptables-$v) | (a) no accounting | (b) wiki: \`-A FORWARD -d IP\` + \`-s IP\` | (c) vzacct, backend = iptables | (d) vzacct, backend = ipset |"
    echo "|---:|---:|---:|---:|---:|"
    for n in $FWD_SIZES; do
      # shellcheck disable=SC2086
      line="| $(fmt_int "$n") | $(fmt_int "$(median 1 0 ${RAW[fwd,none,$v,$n]})") |"
      for c in wiki iptables ipset; do
        if [ "$c" = wiki ] && [ "$n" -eq 0 ]; then line+=" = (a) |"; continue; fi
        if [ -z "${RAW[fwd,$c,$v,$n]:-}" ]; then line+=" (not run) |"; continue; fi
        # shellcheck disable=SC2086
        line+=" $(fmt_int "$(median 1 0 ${RAW[fwd,$c,$v,$n]})") ($(median 0.01 1 ${RAW[fwdrel,$c,$v,$n]}) %) |"
      done
      echo "$line"
    done
    echo
  done
  if [ "$FWD_DETAIL" = 1 ]; then
    # shellcheck disable=SC2086
    b0=$(median 1 0 ${RAW[fwd,dnone,$DV,$fwd_max]})
    echo "What the per-packet cost is made of, $(fmt_int "$fwd_max") accounted IPs, iptables-$DV: the rows marked * come from the table above, the others from one more group per round (no accounting, then the three hand-built configurations). \"added ns/packet\" is 1/rate minus 1/rate without accounting (medians)."
    echo
    echo "| configuration | packets/s | % of no accounting | added ns/packet |"
    echo "|---|---:|---:|---:|"
    row() { # LABEL KEY-CONF N BASE-KEY
      # shellcheck disable=SC2086
      local m bm
      m=$(median 1 0 ${RAW[fwd,$2,$DV,$3]})
      bm=$(median 1 0 ${RAW[fwd,$4,$DV,$3]})
      # shellcheck disable=SC2086
      echo "| $1 | $(fmt_int "$m") | $(median 0.01 1 ${RAW[fwdrel,$2,$DV,$3]}) % | $(awk -v m="$m" -v b="$bm" 'BEGIN { printf "%.0f", (1 / m - 1 / b) * 1e9 }') |"
    }
    echo "| no accounting (no netfilter table) | $(fmt_int "$b0") | 100 % | 0 |"
    if [[ " $FWD_SIZES " == *" 0 "* ]]; then
      row "* vzacct, backend = iptables, 0 IPs: filter table, 3 jumps to empty chains" iptables 0 none
      row "* vzacct, backend = ipset, 0 IPs: the 4 set rules, empty sets" ipset 0 none
    fi
    row "vzacct's 4 set rules, sets without counters" setnc "$fwd_max" dnone
    row "vzacct's 4 set rules, sets with counters (no comment)" setc "$fwd_max" dnone
    row "* vzacct, backend = ipset (counters and comment)" ipset "$fwd_max" none
    command -v nft >/dev/null &&
      row "native nftables: 2 sets with per-element counters, 2 lookups in a forward chain" nftset "$fwd_max" dnone
    echo
  fi
  if [ "$FWD_FREE" = 1 ]; then
    echo "Free networks ([classes]), $(fmt_int "$fwd_max") accounted IPs, backend = ipset: one more group per variant and round (no accounting, then vzacct without classes, then with $FWD_FREE_NETS free networks in 4 prefix lengths: the flow billable, then the flow from a free network; then $FWD_FREE_NETS /16s scattered over the address space, the flow billable but inside a cover of the free rules, so looked up: the worst case). In parentheses: the median over rounds of the rate relative to the run without classes just before it (same round)."
    echo
    echo "| iptables | (a) no accounting | (d) backend = ipset, no classes | (e) $FWD_FREE_NETS free networks, billable flow | (f) $FWD_FREE_NETS free networks, free flow | (g) $FWD_FREE_NETS scattered /16s, billable flow inside a cover |"
    echo "|---|---:|---:|---:|---:|---:|"
    for v in $FWD_VARIANTS; do
      k=$v,$fwd_max,free
      # shellcheck disable=SC2086
      echo "| $v | $(fmt_int "$(median 1 0 ${RAW[fwd,none,$k]})") | $(fmt_int "$(median 1 0 ${RAW[fwd,ipset,$k]})") ($(median 0.01 1 ${RAW[fwdrel,ipset,$k]}) % of (a)) | $(fmt_int "$(median 1 0 ${RAW[fwd,free,$k]})") ($(median 0.01 1 ${RAW[fwdvsipset,free,$k]}) %) | $(fmt_int "$(median 1 0 ${RAW[fwd,freeflow,$k]})") ($(median 0.01 1 ${RAW[fwdvsipset,freeflow,$k]}) %) | $(fmt_int "$(median 1 0 ${RAW[fwd,covered,$k]})") ($(median 0.01 1 ${RAW[fwdvsipset,covered,$k]}) %) |"
    done
    echo
  fi
  echo "Single runs (packets/s), to judge the noise:"
  echo
  for key in $(for v in $FWD_VARIANTS; do for n in $FWD_SIZES; do for c in none wiki iptables ipset; do
    [ "$c" = wiki ] && [ "$n" -eq 0 ] && continue; echo "$c,$v,$n"; done; done; done
    [ "$FWD_DETAIL" = 1 ] && for c in dnone setnc setc nftset; do echo "$c,$DV,$fwd_max"; done
    [ "$FWD_FREE" = 1 ] && for v in $FWD_VARIANTS; do for c in none ipset free freeflow covered; do echo "$c,$v,$fwd_max,free"; done; done); do
    [ -n "${RAW[fwd,$key]:-}" ] || continue
    ratio=""
    [[ $key == *none* ]] || [[ $key == setnc* ]] || [[ $key == *,0 ]] || ratio="; counted/received at the destination: $(minmax 1 3 ${RAW[fwdratio,$key]})"
    echo "- $key: ${RAW[fwd,$key]% }$ratio"
  done
  echo
fi

if part hook; then
  echo "### 2. Hook latency, $(fmt_int "$N") containers accounted"
  echo
  echo "\`vzacct hook net-add\` (VEID = a new CTID, VE_STATE=starting, IP_ADDR with two IPs) then \`vzacct hook umount\` of it, $HOOK_RUNS pairs, median ms (min-max); timed inside the namespace with vzctl's clean environment."
  echo
  bhead "median ms (min-max)"
  line="| \`hook net-add\` |"; for b in $BACKENDS; do line+=" ${R[mount,$b]} (${R[mount_r,$b]}) |"; done; echo "$line"
  line="| \`hook umount\` |"; for b in $BACKENDS; do line+=" ${R[umount,$b]} (${R[umount_r,$b]}) |"; done; echo "$line"
  echo "| hooks that needed the full run (of $((2 * HOOK_RUNS))) |$(bcols full)"
  echo "| ledger directory afterwards, bytes |$(bcols ledger)"
  echo "| the hooked container's bucket file (what a hook reads and writes), bytes |$(bcols bucket)"
  echo
fi

if part dump; then
  echo "### 3. Dump and show, $(fmt_int "$N") containers ($(fmt_int $((ips_per * N))) IPs)"
  echo
  bhead "median ms of $CMD_RUNS (min-max)"
  line="| \`vzacct dump\` |"; for b in $BACKENDS; do line+=" ${R[dump,$b]} (${R[dump_r,$b]}) |"; done; echo "$line"
  line="| \`vzacct show --json\` |"; for b in $BACKENDS; do line+=" ${R[show,$b]} (${R[show_r,$b]}) |"; done; echo "$line"
  echo "| \`show --json\` output, bytes |$(bcols showbytes)"
  echo
fi

if part bringup; then
  echo "### 4. Bring-up of $(fmt_int "$N") containers from empty"
  echo
  echo "Fresh namespace each run. \`sync\`: empty state dir, veinfo lists the $(fmt_int "$N") containers. \`restore\`: the ledger of an earlier dump of the same node, a new boot id."
  echo
  bhead "median ms of $CMD_RUNS (min-max)"
  line="| \`vzacct sync\` from empty |"; for b in $BACKENDS; do line+=" ${R[sync,$b]} (${R[sync_r,$b]}) |"; done; echo "$line"
  line="| \`vzacct restore\` at boot |"; for b in $BACKENDS; do line+=" ${R[restore,$b]} (${R[restore_r,$b]}) |"; done; echo "$line"
  echo
fi

if part mem; then
  echo "### 5. Peak RSS, $(fmt_int "$N") containers"
  echo
  echo "\`/usr/bin/time -f %M\`, MiB, median of $MEM_RUNS (max). As wait4 reports it, this is the largest of vzacct and the children it runs."
  echo
  bhead "peak RSS MiB"
  for c in $MEM_CMDS; do
    case $c in show) label="show --json" ;; mount) label="hook net-add" ;; umount) label="hook $c" ;; add) label="add (2 IPs)" ;; remove) label="remove" ;; *) label=$c ;; esac
    line="| \`$label\` |"; for b in $BACKENDS; do line+=" ${R[mem,$c,$b]} (${R[memmax,$c,$b]}) |"; done; echo "$line"
  done
  echo "| \`ipset save\` alone on that node |$(bcols mem,ipsetsave)"
  echo "| \`iptables-$VARIANT-save -c -t filter\` alone on that node |$(bcols mem,iptsave)"
  if [ "$MEM_SMALL" -gt 0 ]; then echo "| \`dump\` with $(fmt_int "$MEM_SMALL") containers instead, for comparison |$(bcols mem,small)"; fi
  echo
fi

if part wiki && [ "$WIKI_N" -gt 0 ]; then
  echo "### 6. Against the wiki's one call per rule, $(fmt_int "$WIKI_N") containers"
  echo
  echo "| median ms | iptables-$VARIANT |"
  echo "|---|---:|"
  echo "| one \`iptables -w -A\` per rule, $(fmt_int $((8 * WIKI_N))) calls ($WIKI_RUNS runs) | ${R[wiki]} (${R[wiki_r]}) |"
  for b in $BACKENDS; do
    echo "| \`vzacct sync\` from empty, backend = $b ($CMD_RUNS runs) | ${R[wsync,$b]} (${R[wsync_r,$b]}) |"
    echo "| **ratio**, backend = $b | **$(awk -v a="${R[wiki]}" -v b="${R[wsync,$b]}" 'BEGIN { printf "%.0f", a / b }')x** |"
  done
  echo
fi

if part breakdown; then
  echo "### Where the time goes, $(fmt_int "$N") containers"
  echo
  echo "The same commands with vzacct's iptables-$VARIANT-save/-restore and ipset pointing at timing wrappers (median ms of $CMD_RUNS each; columns are medians of their own, so they need not add up). \"vzacct itself\" is the total minus the children minus the wrappers' own cost (${R[wrap]} µs per call, calibrated): vzacct's CPU, reading and writing the ledger, process starts."
  echo
  for b in $BACKENDS; do
    echo "| backend = $b | total | iptables-save | iptables-restore | ipset save | ipset restore | vzacct itself | child calls |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in $BD_CMDS; do
      case $c in show) label="show --json" ;; mount) label="hook net-add" ;; umount) label="hook $c" ;; sync) label="sync from empty" ;; restore) label="restore at boot" ;; add) label="add (2 IPs)" ;; *) label=$c ;; esac
      line="| \`$label\` |"
      for k in total "iptables-$VARIANT-save" "iptables-$VARIANT-restore" ipset-save ipset-restore rest calls; do
        line+=" ${R[bd,$c,$k,$b]} |"
      done
      echo "$line"
    done
    echo
  done
  bhead "on the node of $(fmt_int "$N") containers"
  echo "| \`ipset save\` alone, median ms |$(bcols bd_ipsetsave)"
  echo "| its output, bytes |$(bcols bd_ipsetbytes)"
  echo "| \`iptables-$VARIANT-save -c -t filter\` alone, median ms |$(bcols bd_iptsave)"
  echo "| its output, bytes |$(bcols bd_iptbytes)"
  echo "| ledger directory, bytes |$(bcols bd_ledger)"
  echo
fi

if part profile; then
  echo "### vzacct's own CPU, $(fmt_int "$N") containers"
  echo
  echo "CPU time of the vzacct process alone (\`perf stat --no-inherit -e task-clock\`, children excluded; median of $PROF_RUNS, ms), and the inclusive share of each step in its samples (\`perf record --call-graph dwarf\` of $PROF_RUNS runs; a step's share includes the steps it calls: \`commands::begin\` (lock, load, read the kernel, harvest) the rows below it down to \`Kernel::counted\`, \`commands::commit\` (plan, apply, save) the rows below it, \`Kernel::read\` includes \`ipset::parse_save\`, \`Kernel::plan\` includes \`ipset::plan\` and \`ruleset::plan\`; samples perf could not unwind count nowhere)."
  echo
  for b in $BACKENDS; do
    printf '| backend = %s |' "$b"; for c in $PROF_CMDS; do printf ' %s |' "$c"; done; printf '\n|---|'
    for c in $PROF_CMDS; do printf -- '---:|'; done; printf '\n'
    line="| vzacct CPU, ms |"; for c in $PROF_CMDS; do line+=" ${R[pcpu,$c,$b]} |"; done; echo "$line"
    for f in $PROF_FUNCS; do
      line="| \`${f#vzacct::}\` |"
      for c in $PROF_CMDS; do
        p=${R[prof,$c,$f,$b]}
        if [ "$p" = - ]; then line+=" - |"; else line+=" $p % ($(awk -v p="$p" -v t="${R[pcpu,$c,$b]}" 'BEGIN { printf "%.0f", p * t / 100 }') ms) |"; fi
      done
      echo "$line"
    done
    echo
  done
fi

echo "### Targets"
echo
if part fwd && [[ " $FWD_SIZES " == *" 10000 "* ]]; then
  for v in $FWD_VARIANTS; do
    # shellcheck disable=SC2086
    if [ -n "${RAW[fwdrel,ipset,$v,10000]:-}" ]; then
      rel=$(median 0.01 1 ${RAW[fwdrel,ipset,$v,10000]})
      echo "- forwarding with backend = ipset at 10,000 IPs >= 90 % of no accounting (iptables-$v): $rel % $(met "$rel" 90 ">=")"
    fi
    if [ "$FWD_FREE" = 1 ]; then
      # shellcheck disable=SC2086
      rel=$(median 0.01 1 ${RAW[fwdvsipset,free,$v,10000,free]})
      echo "- forwarding with $FWD_FREE_NETS free networks >= 95 % of no classes, 10,000 IPs (iptables-$v): $rel % $(met "$rel" 95 ">=")"
    fi
  done
fi
for b in $BACKENDS; do
  if part hook; then
    echo "- hook net-add median < 50 ms (backend = $b): ${R[mount,$b]} ms $(met "${R[mount,$b]}" 50 "<"); umount ${R[umount,$b]} ms $(met "${R[umount,$b]}" 50 "<")"
  fi
  if part dump; then
    echo "- dump < 1 s (backend = $b): ${R[dump,$b]} ms $(met "${R[dump,$b]}" 1000 "<"); show --json < 0.5 s: ${R[show,$b]} ms $(met "${R[show,$b]}" 500 "<")"
  fi
  if part bringup; then
    echo "- bring-up of $(fmt_int "$N") < 1 s (backend = $b): sync ${R[sync,$b]} ms $(met "${R[sync,$b]}" 1000 "<"), restore ${R[restore,$b]} ms $(met "${R[restore,$b]}" 1000 "<")"
  fi
  if part mem; then
    worst=0 wc=""
    for c in $MEM_CMDS; do
      if awk -v a="${R[memmax,$c,$b]}" -v w="$worst" 'BEGIN { exit !(a > w) }'; then worst=${R[memmax,$c,$b]} wc=$c; fi
    done
    echo "- peak RSS < 50 MB for every command (backend = $b): largest $worst MiB ($wc) $(met "$(awk -v m="$worst" 'BEGIN { print m * 1.048576 }')" 50 "<")"
  fi
done

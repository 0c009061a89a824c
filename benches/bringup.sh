#!/usr/bin/env bash
# Bring-up benchmark: how long vzacct takes to put N containers under accounting from empty
# tables, against one `iptables -A` per rule (the wiki's way), and how long `vzacct add` of
# one container takes on a node that already accounts many. Everything runs against real
# iptables (legacy and nf_tables) inside throwaway network namespaces named vzb-<pid>-<n>;
# the host's own firewall is never touched, and every namespace is deleted on exit.
#
# Usage, as root, from anywhere:
#   bash benches/bringup.sh
# It builds the release binary (into $CARGO_TARGET_DIR, default <repo>/target), runs every
# measurement and prints Markdown tables. Knobs, all optional:
#   RUNS=5             runs per measurement (median reported)
#   SIZES="1000 10000" container counts for bring-up by `vzacct sync`
#   WIKI_N=1000        container count for the one-call-per-rule comparison (0 skips it)
#   WIKI_RUNS=5        runs of the one-call-per-rule comparison (slow: ~10-45 s each)
#   ADD_BASE=10000     containers already accounted when `vzacct add` is timed (0 skips it)
#   VARIANTS="legacy nft"
#   PHASES=1           also split the time between iptables-save, iptables-restore and
#                      vzacct itself (0 skips it)
#   VZACCT_BIN=path    time this vzacct binary instead of building the checkout (e.g. one built
#                      from `git archive COMMIT` while the working tree moves on);
#                      VZACCT_REV=text names it in the report
# Needs: bash, coreutils (date, sort, paste, mktemp), awk, sed, grep, iproute2, iptables (both
# the -legacy and -nft programs), cargo. Takes about 6 minutes, mostly the one-call-per-rule part.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
SIZES=${SIZES:-"1000 10000"}
WIKI_N=${WIKI_N:-1000}
WIKI_RUNS=${WIKI_RUNS:-5}
ADD_BASE=${ADD_BASE:-10000}
VARIANTS=${VARIANTS:-"legacy nft"}
PHASES=${PHASES:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

die() { echo "bringup.sh: $*" >&2; exit 1; }
log() { echo "bringup.sh: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and iptables)"
for v in $VARIANTS; do
  case $v in legacy | nft) ;; *) die "VARIANTS: unknown variant $v (legacy or nft)" ;; esac
  for p in iptables-$v iptables-$v-save iptables-$v-restore; do
    command -v "$p" >/dev/null || die "$p not found (Debian: apt-get install iptables)"
  done
done
for p in ip awk date sort cargo; do command -v "$p" >/dev/null || die "$p not found"; done
for n in $SIZES $WIKI_N $ADD_BASE; do
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -le 62500 ] || die "container counts must be 0..62500, got $n"
done
[ "$RUNS" -ge 1 ] || die "RUNS must be at least 1"

if [ -n "${VZACCT_BIN:-}" ]; then
  [ -x "$VZACCT_BIN" ] || die "VZACCT_BIN=$VZACCT_BIN is not executable"
  vzacct_src=$VZACCT_BIN
  rev="${VZACCT_REV:-unknown} (prebuilt binary $VZACCT_BIN)"
else
  log "building the release binary into $CARGO_TARGET_DIR"
  cargo build --release --locked -q --manifest-path "$REPO/Cargo.toml"
  vzacct_src=$CARGO_TARGET_DIR/release/vzacct
  # What was built, for the report.
  if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
    [ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock)" ] || rev+=" + uncommitted changes"
  else
    rev="unknown (not a git checkout)"
  fi
fi

# --- namespaces and scratch space, all removed on exit --------------------------------------
NS_PREFIX=vzb-$$-
NS_SEQ=0
NS=""
WORK=$(mktemp -d /tmp/vzacct-bench.XXXXXX)
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

new_ns() {
  NS_SEQ=$((NS_SEQ + 1))
  NS=$NS_PREFIX$NS_SEQ
  ip netns add "$NS"
}
drop_ns() {
  ip netns del "$NS"
  NS=""
}
in_ns() { ip netns exec "$NS" "$@"; }

# --- helpers --------------------------------------------------------------------------------
now() { date +%s%N; }
# Median of microsecond integers, printed as milliseconds with one decimal.
median_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {
  m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a / b }'; }
fmt_int() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

# veinfo with host line and N containers (CTID 101...), two IPv4 each: 10.A.x.y and 10.B.x.y.
gen_veinfo() { # N A B FILE
  awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { print "       0     0     1"
    for (i = 0; i < n; i++) { x = int(i / 250); y = i % 250 + 1
      printf "%10d     0     1 10.%d.%d.%d 10.%d.%d.%d\n", i + 101, a, x, y, b, x, y } }' >"$4"
}

# Config for one variant; $2 is the iptables program (a wrapper path for phase timing).
gen_config() { # VARIANT IPTABLES VEINFO STATEDIR FILE
  cat >"$5" <<CONF
[vzctl]
veinfo = $3
conf_dir = $4/conf
[netfilter]
iptables = $2
ip6tables = ip6tables-$1
ipv6 = no
backend = ${BACKEND:-iptables}
[storage]
state_dir = $4/state
csv_dir = $4/csv
CONF
}

# Our rules in the current namespace.
count_ours() { in_ns "iptables-$1-save" -t filter 2>/dev/null | grep -c 'ct:' || true; }
count_all() { in_ns "iptables-$1-save" -t filter 2>/dev/null | grep -c '^-A ' || true; }
expect_rules() { # WHAT GOT WANT
  [ "$2" -eq "$3" ] || die "$1: expected $3 rules in the namespace, found $2"
}

# Run vzacct in the current namespace; on failure show its output and stop.
vz() { # CONFIG ARGS...
  local cfg=$1
  shift
  in_ns "$VZACCT" --config "$cfg" "$@" >"$WORK/vz.out" 2>&1 ||
    { cat "$WORK/vz.out" >&2; die "vzacct $* failed in $NS"; }
}

# Wrappers that time (and, for restore, keep) each iptables-save/-restore vzacct runs.
# Configured as `iptables = $WORK/wrap-V/iptables-V`; the companions are derived from it.
make_wrappers() { # VARIANT
  local v=$1 dir=$WORK/wrap-$1 p real
  mkdir -p "$dir"
  for p in save restore; do
    real=$(command -v "iptables-$v-$p")
    cat >"$dir/iptables-$v-$p" <<WRAP
#!/usr/bin/env bash
# Feed the real program from a file so the copy is not timed; log start and end.
cat >"$dir/$p.in"
s=\$(date +%s%N)
rc=0
"$real" "\$@" <"$dir/$p.in" || rc=\$?
e=\$(date +%s%N)
echo "$p \$(( (e - s) / 1000 ))" >>"$dir/log"
exit \$rc
WRAP
    chmod +x "$dir/iptables-$v-$p"
  done
}
# Sum of the logged microseconds of one program since the log was cleared.
wrapped_us() { awk -v p="$2" '$1 == p { t += $2 } END { print t + 0 }' "$WORK/wrap-$1/log"; }

declare -A R # results: R[key]=median ms

# --- 1. bring-up from empty by `vzacct sync` --------------------------------------------------
sync_sizes=$SIZES
if [ "$WIKI_N" -gt 0 ] && [[ " $SIZES " != *" $WIKI_N "* ]]; then sync_sizes="$WIKI_N $SIZES"; fi
for n in $sync_sizes; do
  gen_veinfo "$n" 1 2 "$WORK/veinfo-$n"
  for v in $VARIANTS; do
    samples=()
    for r in $(seq "$RUNS"); do
      dir=$WORK/sync-$v-$n-$r
      mkdir -p "$dir"
      gen_config "$v" "iptables-$v" "$WORK/veinfo-$n" "$dir" "$dir/vzacct.conf"
      new_ns
      t0=$(now)
      vz "$dir/vzacct.conf" sync
      t1=$(now)
      samples+=($(((t1 - t0) / 1000)))
      expect_rules "sync of $n containers ($v, run $r)" "$(count_ours "$v")" $((8 * n))
      drop_ns
      rm -rf "$dir"
    done
    R[sync,$v,$n]=$(median_ms "${samples[@]}")
    log "sync from empty, $n containers, $v: ${R[sync,$v,$n]} ms (runs: ${samples[*]} us)"
  done
done

# --- 2. the wiki's way: one `iptables -A` per rule ----------------------------------------------
if [ "$WIKI_N" -gt 0 ] && [ "$WIKI_RUNS" -gt 0 ]; then
  for v in $VARIANTS; do
    samples=()
    for r in $(seq "$WIKI_RUNS"); do
      new_ns
      t0=$(now)
      # One shell in the namespace, as the wiki's loop would run on the node.
      in_ns bash -c '
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
        done <"$2"' wiki "iptables-$v" "$WORK/veinfo-$WIKI_N"
      t1=$(now)
      samples+=($(((t1 - t0) / 1000)))
      expect_rules "one call per rule, $WIKI_N containers ($v, run $r)" "$(count_all "$v")" $((8 * WIKI_N))
      drop_ns
    done
    R[wiki,$v]=$(median_ms "${samples[@]}")
    log "one iptables -A per rule, $WIKI_N containers, $v: ${R[wiki,$v]} ms (runs: ${samples[*]} us)"
  done
fi

# --- 3. `vzacct add` of one container on a node accounting ADD_BASE ------------------------------
if [ "$ADD_BASE" -gt 0 ]; then
  [ -f "$WORK/veinfo-$ADD_BASE" ] || gen_veinfo "$ADD_BASE" 1 2 "$WORK/veinfo-$ADD_BASE"
  base=$((8 * ADD_BASE))
  for v in $VARIANTS; do
    dir=$WORK/add-$v
    mkdir -p "$dir"
    gen_config "$v" "iptables-$v" "$WORK/veinfo-$ADD_BASE" "$dir" "$dir/vzacct.conf"
    new_ns
    vz "$dir/vzacct.conf" sync
    expect_rules "base of $ADD_BASE containers ($v)" "$(count_ours "$v")" "$base"
    adds=() removes=()
    for r in $(seq "$RUNS"); do
      ctid=$((900000 + r)) ip1=10.3.0.$r ip2=10.4.0.$r
      t0=$(now)
      vz "$dir/vzacct.conf" add "$ctid" "$ip1" "$ip2"
      t1=$(now)
      adds+=($(((t1 - t0) / 1000)))
      expect_rules "add of CT $ctid ($v)" "$(count_ours "$v")" $((base + 8))
      t0=$(now)
      vz "$dir/vzacct.conf" remove "$ctid"
      t1=$(now)
      removes+=($(((t1 - t0) / 1000)))
      expect_rules "remove of CT $ctid ($v)" "$(count_ours "$v")" "$base"
    done
    R[add,$v]=$(median_ms "${adds[@]}")
    R[remove,$v]=$(median_ms "${removes[@]}")
    log "add on $ADD_BASE, $v: ${R[add,$v]} ms (runs: ${adds[*]} us); remove: ${R[remove,$v]} ms"

    if [ "$PHASES" = 1 ]; then
      # Same namespace and ledger, iptables wrapped: how add's time splits.
      make_wrappers "$v"
      gen_config "$v" "$WORK/wrap-$v/iptables-$v" "$WORK/veinfo-$ADD_BASE" "$dir" "$dir/wrapped.conf"
      saves=() restores=() rests=() tots=()
      for r in $(seq "$RUNS"); do
        ctid=$((910000 + r))
        : >"$WORK/wrap-$v/log"
        t0=$(now)
        vz "$dir/wrapped.conf" add "$ctid" "10.3.1.$r" "10.4.1.$r"
        t1=$(now)
        s=$(wrapped_us "$v" save) x=$(wrapped_us "$v" restore)
        saves+=("$s") restores+=("$x") rests+=($(((t1 - t0) / 1000 - s - x)))
        tots+=($(((t1 - t0) / 1000)))
        vz "$dir/vzacct.conf" remove "$ctid"
      done
      R[add_save,$v]=$(median_ms "${saves[@]}")
      R[add_restore,$v]=$(median_ms "${restores[@]}")
      R[add_rest,$v]=$(median_ms "${rests[@]}")
      R[add_wtotal,$v]=$(median_ms "${tots[@]}")
    fi
    drop_ns
    rm -rf "$dir"
  done
fi

# --- 4. where bring-up time goes, at the largest size -------------------------------------------
big=$(printf '%s\n' $SIZES | sort -n | tail -1)
if [ "$PHASES" = 1 ]; then
  for v in $VARIANTS; do
    make_wrappers "$v"
    saves=() restores=() rests=() tots=() raws=()
    for r in $(seq "$RUNS"); do
      dir=$WORK/phase-$v-$r
      mkdir -p "$dir"
      gen_config "$v" "$WORK/wrap-$v/iptables-$v" "$WORK/veinfo-$big" "$dir" "$dir/vzacct.conf"
      : >"$WORK/wrap-$v/log"
      new_ns
      t0=$(now)
      vz "$dir/vzacct.conf" sync
      t1=$(now)
      s=$(wrapped_us "$v" save) x=$(wrapped_us "$v" restore)
      saves+=("$s") restores+=("$x") rests+=($(((t1 - t0) / 1000 - s - x)))
      tots+=($(((t1 - t0) / 1000)))
      drop_ns
      # The very batch vzacct produced, fed to iptables-restore alone in a fresh namespace.
      cp "$WORK/wrap-$v/restore.in" "$dir/batch"
      new_ns
      t0=$(now)
      in_ns "iptables-$v-restore" -w --noflush --counters <"$dir/batch"
      t1=$(now)
      raws+=($(((t1 - t0) / 1000)))
      expect_rules "raw restore of $big containers ($v)" "$(count_ours "$v")" $((8 * big))
      drop_ns
      rm -rf "$dir"
    done
    R[save,$v]=$(median_ms "${saves[@]}")
    R[restore,$v]=$(median_ms "${restores[@]}")
    R[rest,$v]=$(median_ms "${rests[@]}")
    # What one timing wrapper adds around iptables-save: same call with and without it.
    new_ns
    direct=() wrapped=()
    for r in $(seq "$RUNS"); do
      t0=$(now)
      in_ns "iptables-$v-save" -t filter </dev/null >/dev/null
      t1=$(now)
      in_ns "$WORK/wrap-$v/iptables-$v-save" -t filter </dev/null >/dev/null
      t2=$(now)
      direct+=($(((t1 - t0) / 1000))) wrapped+=($(((t2 - t1) / 1000)))
    done
    drop_ns
    R[wrap,$v]=$(awk -v w="$(median_ms "${wrapped[@]}")" -v d="$(median_ms "${direct[@]}")" \
      'BEGIN { printf "%.1f", 2 * (w - d) }')
    R[wtotal,$v]=$(median_ms "${tots[@]}")
    R[raw,$v]=$(median_ms "${raws[@]}")
  done
fi

# --- report --------------------------------------------------------------------------------------
cleanup_check=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^$NS_PREFIX" || true)
[ "$cleanup_check" -eq 0 ] || die "left $cleanup_check namespace(s) behind"

col() { # KEY: one cell per variant
  local v out=""
  for v in $VARIANTS; do out+=" ${R[$1,$v]:-n/a} |"; done
  printf '%s' "$out"
}
header() {
  local v
  printf '| %s |' "$1"
  for v in $VARIANTS; do printf ' iptables-%s |' "$v"; done
  printf '\n|---|'
  for v in $VARIANTS; do printf -- '---:|'; done
  printf '\n'
}

echo "## vzacct bring-up benchmark"
echo
echo "vzacct at commit $rev."
echo "nproc $(nproc), kernel $(uname -r), $(for v in $VARIANTS; do iptables-$v --version; done | paste -sd, | sed 's/,/, /g');" \
  "median of $RUNS run(s) (one-call-per-rule: $WIKI_RUNS), milliseconds, wall clock including \`ip netns exec\`."
echo
header "measurement (median ms)"
for n in $sync_sizes; do
  line="| \`vzacct sync\` from empty, $(fmt_int "$n") containers ($(fmt_int $((8 * n))) rules) |"
  for v in $VARIANTS; do line+=" ${R[sync,$v,$n]} |"; done
  echo "$line"
done
if [ "$WIKI_N" -gt 0 ] && [ "$WIKI_RUNS" -gt 0 ]; then
  echo "| one \`iptables -w -A\` per rule, $(fmt_int "$WIKI_N") containers ($(fmt_int $((8 * WIKI_N))) calls) |$(col wiki)"
  line="| **ratio** one-call-per-rule / \`vzacct sync\`, $(fmt_int "$WIKI_N") containers |"
  for v in $VARIANTS; do line+=" **$(ratio "${R[wiki,$v]}" "${R[sync,$v,$WIKI_N]}")x** |"; done
  echo "$line"
fi
if [ "$ADD_BASE" -gt 0 ]; then
  echo "| \`vzacct add\` of 1 container (2 IPs) with $(fmt_int "$ADD_BASE") accounted |$(col add)"
  echo "| \`vzacct remove\` of that container (not a target; for reference) |$(col remove)"
fi

if [ "$PHASES" = 1 ]; then
  echo
  header "where the time goes (median ms)"
  echo "| \`vzacct sync\` from empty, $(fmt_int "$big") containers, iptables wrapped for timing: total |$(col wtotal)"
  echo "|   inside it: iptables-save (empty table) |$(col save)"
  echo "|   inside it: iptables-restore of the batch |$(col restore)"
  echo "|   rest: vzacct itself, process starts, \`ip netns exec\`, timing wrappers |$(col rest)"
  echo "|   of the rest: the two timing wrappers (calibrated) |$(col wrap)"
  echo "| the same batch through iptables-restore alone, fresh namespace |$(col raw)"
  if [ "$ADD_BASE" -gt 0 ]; then
    echo "| \`vzacct add\` with $(fmt_int "$ADD_BASE") accounted, iptables wrapped for timing: total |$(col add_wtotal)"
    echo "|   inside it: iptables-save of $(fmt_int $((8 * ADD_BASE))) rules |$(col add_save)"
    echo "|   inside it: iptables-restore of the 8-rule batch |$(col add_restore)"
    echo "|   rest: vzacct itself, process starts, \`ip netns exec\`, timing wrappers |$(col add_rest)"
    echo "|   of the rest: the two timing wrappers (calibrated above) |$(col wrap)"
  fi
fi

echo
echo "Targets:"
if [[ " $sync_sizes " == *" 10000 "* ]]; then
  for v in $VARIANTS; do
    met=$(awk -v t="${R[sync,$v,10000]}" 'BEGIN { print (t < 2000) ? "met" : "NOT met" }')
    echo "- 10,000 containers from empty in under 2 s, iptables-$v: ${R[sync,$v,10000]} ms, $met"
  done
fi
if [ "$WIKI_N" -gt 0 ] && [ "$WIKI_RUNS" -gt 0 ]; then
  for v in $VARIANTS; do
    x=$(ratio "${R[wiki,$v]}" "${R[sync,$v,$WIKI_N]}")
    met=$([ "$x" -ge 100 ] && echo met || echo "NOT met")
    echo "- at least 100x faster than one call per rule at $(fmt_int "$WIKI_N") containers, iptables-$v: ${x}x, $met"
  done
fi

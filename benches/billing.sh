#!/usr/bin/env bash
# Issue 14: `history` and `show --period` on a node of N containers (10,000) with D days
# (800) of history each. The ledger is made by the binary (`vzacct add` of one container in
# a throwaway network namespace, so it has its schema and node row), then filled with SQL:
# N containers with one IP each and D closed days each, plus an open day. Then each command
# is run R times inside the namespace (it reads that namespace's empty ruleset, never the
# host's) and timed. The namespace vzbill-<pid> and the temp dir are removed on exit.
#
# Usage, as root:  bash benches/billing.sh >report.md    (progress on stderr)
# Knobs: N=10000 D=800 R=9 VZACCT_BIN=path (else the release build of this tree)
set -euo pipefail
N=${N:-10000}
D=${D:-800}
R=${R:-9}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${VZACCT_BIN:-}" ]; then
    (cd "$here" && cargo build --release --quiet)
    VZACCT_BIN=${CARGO_TARGET_DIR:-$here/target}/release/vzacct
fi
ns=vzbill-$$
dir=$(mktemp -d)
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ip netns add "$ns"
cat >"$dir/vzacct.conf" <<CONF
[vzctl]
conf_dir = $dir/conf
veinfo = $dir/veinfo
[netfilter]
backend = iptables
ipv6 = no
[storage]
state_dir = $dir/state
csv_dir = $dir/csv
timezone = UTC
[billing]
cycle_day = 15
CONF
mkdir -p "$dir/conf"
echo bench-boot >"$dir/boot_id"
now=2027-03-20T12:00:00Z
vz() { ip netns exec "$ns" env VZACCT_NOW=$now VZACCT_BOOT_ID_FILE="$dir/boot_id" \
    "$VZACCT_BIN" --config "$dir/vzacct.conf" "$@"; }
vz add 1 10.0.0.1 >/dev/null
db=$dir/state/ledger.sqlite
echo "filling $db: $N containers x $D days" >&2
t0=$(date +%s.%N)
sqlite3 "$db" >&2 <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO containers (ctid, total_since, last_closed, month)
  SELECT i, '2025-01-01T00:00:00Z', date('2027-03-19'), '2027-03' FROM n;
WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO ips (ctid, ip) SELECT i, '10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N),
  d(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM d WHERE k < $D)
INSERT OR REPLACE INTO days (ctid, date, in_bytes, out_bytes, in_packets, out_packets,
    local_in_bytes, local_out_bytes, local_in_packets, local_out_packets)
  SELECT i, date('2027-03-20', '-' || k || ' days'), 1000 * k + i, 2000 * k + i, k, k, 0, 0, 0, 0
  FROM n, d ORDER BY 1, 2;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT OR REPLACE INTO open_days (ctid, date, in_bytes, out_bytes, in_packets, out_packets,
    local_in_bytes, local_out_bytes, local_in_packets, local_out_packets)
  SELECT i, '2027-03-20', 5, 6, 1, 1, 0, 0, 0, 0 FROM n;
INSERT INTO cycle_days (ctid, cycle_day_from, cycle_day) VALUES ('77', '2026-06-15', 1);
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
t1=$(date +%s.%N)
rows=$(sqlite3 "$db" "SELECT count(*) FROM days")
size=$(du -m "$db" | cut -f1)
echo "filled in $(echo "$t1 - $t0" | bc) s: $rows days, $size MB" >&2

# median and range of R runs of a command, in ms
time_it() {
    local label=$1; shift
    local ts=()
    for _ in $(seq "$R"); do
        local a b
        a=$(date +%s%N)
        vz "$@" >/dev/null
        b=$(date +%s%N)
        ts+=($(( (b - a) / 1000000 )))
    done
    local sorted
    sorted=$(printf '%s\n' "${ts[@]}" | sort -n)
    local med min max
    med=$(echo "$sorted" | sed -n "$(( (R + 1) / 2 ))p")
    min=$(echo "$sorted" | head -1)
    max=$(echo "$sorted" | tail -1)
    echo "| \`$label\` | $med ($min-$max) |"
    echo "$label: $med ms" >&2
}

echo "vzacct $(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?'), $N containers, $D days each ($rows rows, ${size} MB), nproc $(nproc), kernel $(uname -r)"
echo
echo "| command | median ms of $R (min-max) |"
echo "|---|---:|"
time_it "history 5000 --days 30" history 5000
time_it "history 5000 --days 800 --json" history 5000 --days 800 --json
time_it "history 5000 --months 27" history 5000 --months 27
time_it "show 5000 --period previous --json" show 5000 --period previous --json
time_it "show 5000 --period 2025-03-01..2027-03-01 --json" show 5000 --period 2025-03-01..2027-03-01 --json
time_it "show --json (all: current and previous period)" show --json
time_it "show --period previous --json (all)" show --period previous --json
time_it "show --period 2026-12 (all, table)" show --period 2026-12

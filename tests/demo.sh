#!/usr/bin/env bash
# vzacct demonstration, entirely inside private network namespaces (the host's own
# firewall is never touched): a node with venet0 towards two containers and an uplink to
# the world; containers are put under accounting, real packets are sent, counters are
# dumped into the ledger, survive a flush and a simulated reboot, and close into daily CSV.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
VARIANT=${VARIANT:-nft}           # nft or legacy
cargo build --release --locked -q
BIN=$PWD/target/release/vzacct

P=vzdemo-$$
NODE=$P-node SW=$P-sw WORLD=$P-world C1=$P-ct101 C2=$P-ct102
WORK=$(mktemp -d /tmp/vzacct-demo.XXXXXX)
cleanup() {
  for ns in "$C1" "$C2" "$SW" "$WORLD" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for ns in "$NODE" "$SW" "$WORLD" "$C1" "$C2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Topology: node venet0 <-> switch (bridge) <-> one namespace per container; node up0 <-> world.
ip -n "$NODE" link add venet0 type veth peer name vsw netns "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set vsw master br0
ip -n "$SW" link set vsw up; ip -n "$SW" link set br0 up
ip -n "$NODE" link set venet0 up
ip -n "$NODE" addr add 10.255.0.1/32 dev venet0
nsx "$NODE" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.venet0.send_redirects=0
ip -n "$NODE" link add up0 type veth peer name wan0 netns "$WORLD"
ip -n "$NODE" link set up0 up; ip -n "$NODE" addr add 198.51.100.1/24 dev up0
ip -n "$WORLD" link set wan0 up; ip -n "$WORLD" addr add 198.51.100.2/24 dev wan0
ip -n "$WORLD" route add 10.0.0.0/8 via 198.51.100.1
n=0
for pair in "$C1:10.0.0.1" "$C2:10.0.0.2"; do
  ns=${pair%%:*} ip=${pair#*:}; n=$((n + 1))
  ip -n "$SW" link add p$n type veth peer name eth0 netns "$ns"
  ip -n "$SW" link set p$n master br0; ip -n "$SW" link set p$n up
  ip -n "$ns" link set eth0 up; ip -n "$ns" addr add "$ip/32" dev eth0
  ip -n "$ns" route add 10.255.0.1 dev eth0; ip -n "$ns" route add default via 10.255.0.1
  ip -n "$NODE" route add "$ip/32" dev venet0 src 10.255.0.1
done

mkdir -p "$WORK/conf"
# The kernel's boot id, replaced by a file of ours so the demo can simulate a reboot.
export VZACCT_BOOT_ID_FILE=$WORK/boot_id BOOT_ID=$WORK/boot_id
echo "demo-boot-1" > "$BOOT_ID"
cat > "$WORK/vzacct.conf" <<CONF
[vzctl]
conf_dir = $WORK/conf
veinfo = $WORK/veinfo
[netfilter]
iptables = iptables-$VARIANT
ip6tables = ip6tables-$VARIANT
[storage]
state_dir = $WORK/state
csv_dir = $WORK/csv
CONF
# A vzctl container config, as vzctl writes it (with a hostile token vzacct must refuse).
cat > "$WORK/conf/101.conf" <<'CT'
# Container 101
ONBOOT="yes"
HOSTNAME="ct101.example.com"
IP_ADDRESS="10.0.0.1 $(reboot)"
CT
vz() { echo "# vzacct $*"; nsx "$NODE" "$BIN" --config "$WORK/vzacct.conf" "$@"; }
ours() { nsx "$NODE" iptables-$VARIANT-save -c -t filter | grep -E 'VZACCT|FOREIGN|DROP' || true; }

step "A provider's own rule is already on the node (it must come through untouched)"
nsx "$NODE" iptables-$VARIANT -w -A FORWARD -s 192.0.2.66 -j DROP
ours

step "Account container 101 from its vzctl config, and 102 with an explicit IP"
vz add 101
vz add 102 10.0.0.2
ours

step "Real packets: world -> 101 (3 pings of 1000 bytes), 101 -> node (2 pings of 500 bytes), 101 -> 102 (1 ping of 200 bytes)"
nsx "$WORLD" ping -q -c 3 -s 972 -i 0.2 10.0.0.1 >/dev/null
nsx "$C1" ping -q -c 2 -s 472 -i 0.2 10.255.0.1 >/dev/null
nsx "$C1" ping -q -c 1 -s 172 10.0.0.2 >/dev/null
echo "Every echo request has a reply of the same size: each rule below shows exact IP bytes."
ours

step "Running everything again changes nothing (idempotent); status confirms the rules"
before=$(nsx "$NODE" iptables-$VARIANT-save -c -t filter | grep -v '^#')
vz add 101
vz sync
after=$(nsx "$NODE" iptables-$VARIANT-save -c -t filter | grep -v '^#')
[ "$before" = "$after" ] && echo "ruleset byte-identical after add + sync"
vz status

step "Every command first folds the kernel's counters into the ledger (the add and sync above already did); cron runs dump every 5 minutes; show is live"
vz dump
vz show
vz show --json 101

step "Someone flushes our chains; the next dump heals them and the ledger keeps what was counted"
nsx "$NODE" iptables-$VARIANT -w -F VZACCT-FORWARD
vz status | tail -3
vz dump
vz show 101

step "Simulated reboot: every table emptied, a new boot id; the init script's restore brings the rules back"
for t in iptables ip6tables; do nsx "$NODE" $t-$VARIANT -w -F; nsx "$NODE" $t-$VARIANT -w -X; done
echo "demo-boot-2" > "$BOOT_ID"
echo "after the reboot, our rules in the kernel: $(nsx "$NODE" iptables-$VARIANT-save | grep -c VZACCT || true)"
vz restore
ours
nsx "$WORLD" ping -q -c 2 -s 1472 -i 0.2 10.0.0.1 >/dev/null
echo "2 more pings of 1500 bytes world -> 101 after the reboot"
vz dump
echo "the totals survived the reboot and include the new traffic:"
vz show

step "The first dump after local midnight closes the day into each container's CSV"
export VZACCT_NOW=$(date -d 'tomorrow 00:05' --iso-8601=seconds)
vz dump
for f in "$WORK"/csv/*.csv; do echo "--- $f"; cat "$f"; done

step "A new billing period for 101 (reset); 102 and the CSV are untouched"
vz reset 101
vz show
unset VZACCT_NOW

step "Container 102 stops: remove it; 101's counters are untouched"
vz remove 102
ours
echo
echo "Demo finished; namespaces are removed on exit."

#!/usr/bin/env bash
# vzacct demonstration: the whole life cycle of a container on an OpenVZ node, entirely
# inside private network namespaces (the host's own firewall is never touched).
#
# A node namespace has venet0 towards the containers (one namespace each, behind a switch)
# and an uplink to a world namespace. vzacct is installed into a fake root that holds
# stand-ins for vzctl's network scripts and an operator's own vps.mount; vzctl's calls are
# replayed with vzctl's exact environment (env -i + VEID, VE_CONFFILE, VE_STATE, IP_ADDR)
# and order. Real packets are sent; the ledger, the daily CSV and `vzacct show` give the
# exact bytes, across IP changes, a stop, a simulated reboot and a midnight.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/deps.sh
VARIANT=${VARIANT:-nft}           # nft or legacy
BACKEND=${BACKEND:-ipset}         # ipset or iptables (how the per-IP counters are kept)
cargo build --release --locked -q
BIN=$PWD/target/release/vzacct

P=vzdemo-$$
NODE=$P-node SW=$P-sw WORLD=$P-world C1=$P-ct101 C2=$P-ct102
WORK=$(mktemp -d /tmp/vzacct-demo.XXXXXX)
ROOT=$WORK/root
cleanup() {
  for ns in "$C1" "$C2" "$SW" "$WORLD" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- The node, its containers and the world ----------------------------------------------
for ns in "$NODE" "$SW" "$WORLD" "$C1" "$C2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
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
for spec in "$C1:10.0.0.1 10.0.0.2 10.0.0.3" "$C2:10.0.0.20"; do
  ns=${spec%%:*}; n=$((n + 1))
  ip -n "$SW" link add p$n type veth peer name eth0 netns "$ns"
  ip -n "$SW" link set p$n master br0; ip -n "$SW" link set p$n up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 10.255.0.1 dev eth0
  for ip in ${spec#*:}; do
    ip -n "$ns" addr add "$ip/32" dev eth0
    ip -n "$NODE" route add "$ip/32" dev venet0 src 10.255.0.1
  done
  ip -n "$ns" route add default via 10.255.0.1
done

# --- A fake root: vzctl's scripts (stand-ins that log their call), an operator's vps.mount -
SCRIPTS=$ROOT/usr/libexec/vzctl/scripts
mkdir -p "$SCRIPTS" "$ROOT/etc/vz/conf"
for s in vps-net_add vps-net_del; do
  printf '#!/bin/sh\necho "  (vzctl'"'"'s %s ran: VEID=$VEID VE_STATE=$VE_STATE IP_ADDR=$IP_ADDR)"\n' "$s" > "$SCRIPTS/$s"
done
printf '#!/bin/sh\necho "  (the operator'"'"'s own vps.mount ran for $VEID)"\n' > "$ROOT/etc/vz/conf/vps.mount"
chmod +x "$SCRIPTS"/* "$ROOT/etc/vz/conf/vps.mount"
cat > "$ROOT/etc/vz/vzacct.conf" <<CONF
[vzctl]
conf_dir = $ROOT/etc/vz/conf
veinfo = $WORK/veinfo
hook_log = $WORK/hook.log
[netfilter]
iptables = iptables-$VARIANT
ip6tables = ip6tables-$VARIANT
backend = $BACKEND
[storage]
state_dir = $WORK/state
csv_dir = $WORK/csv
CONF
CONF_FILE=$ROOT/etc/vz/vzacct.conf
vz() { echo "# vzacct $*"; nsx "$NODE" "$BIN" --config "$CONF_FILE" "$@"; }
ours() { # vzacct's rules (and, with the ipset backend, its set elements with their counters)
  nsx "$NODE" iptables-$VARIANT-save -c -t filter | grep -E 'VZACCT|DROP' || true
  nsx "$NODE" ipset save 2>/dev/null | grep -E '^add vzacct-' || true
}
ct_conf() { # vzctl saves a config by writing <file>.tmp and renaming it
  printf 'ONBOOT="yes"\nHOSTNAME="ct%s"\nIP_ADDRESS="%s"\n' "$1" "$2" > "$ROOT/etc/vz/conf/$1.conf.tmp"
  mv "$ROOT/etc/vz/conf/$1.conf.tmp" "$ROOT/etc/vz/conf/$1.conf"
}
# Run a script the way vzctl does: only vzctl's environment, stdin from /dev/null.
vzctl_run() { # script VAR=value...
  local script=$1; shift
  nsx "$NODE" env -i HOME=/ TERM=linux PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@" "$script" </dev/null
}
mount_ct()   { vzctl_run "$ROOT/etc/vz/conf/vps.mount"  VEID="$1" VE_CONFFILE="$ROOT/etc/vz/conf/$1.conf"; }
umount_ct()  { vzctl_run "$ROOT/etc/vz/conf/vps.umount" VEID="$1" VE_CONFFILE="$ROOT/etc/vz/conf/$1.conf"; }
net_add()    { vzctl_run "$SCRIPTS/vps-net_add" VEID="$1" VE_STATE="$2" IP_ADDR="$3"; }
net_del()    { vzctl_run "$SCRIPTS/vps-net_del" VEID="$1" VE_STATE="$2" IP_ADDR="$3"; }
ping_ct()    { nsx "$WORLD" ping -q -c "$2" -s "$(( $3 - 28 ))" -i 0.2 "$1" >/dev/null; echo "  $2 pings of $3 bytes world -> $1 (and $2 replies back)"; }

step "A provider's own firewall rule is on the node; vzacct must leave it alone"
nsx "$NODE" iptables-$VARIANT -w -A FORWARD -s 192.0.2.66 -j DROP
ours

step "vzacct install: hooks, wrappers around vzctl's scripts, init script, unit, cron entry"
nsx "$NODE" "$BIN" install --root "$ROOT"
echo "--- the wrapper that now stands where vzctl's vps-net_add was:"
cat "$SCRIPTS/vps-net_add"

step "vzctl start 101 (config IP_ADDRESS=\"10.0.0.1 10.0.0.2\") and 102: mount scripts, then vps-net_add"
ct_conf 101 "10.0.0.1 10.0.0.2"
ct_conf 102 "10.0.0.20"
for ct in 101 102; do
  ips=$(sed -n 's/^IP_ADDRESS="\(.*\)"/\1/p' "$ROOT/etc/vz/conf/$ct.conf")
  mount_ct $ct
  net_add $ct starting "$ips"
done
ours
ping_ct 10.0.0.1 3 1000
ping_ct 10.0.0.2 2 500
ping_ct 10.0.0.20 1 100

step "vzctl set 101 --ipadd 10.0.0.3 --save: vps-net_add runs BEFORE the config is rewritten"
net_add 101 running 10.0.0.3
ct_conf 101 "10.0.0.1 10.0.0.2 10.0.0.3"
ping_ct 10.0.0.3 4 300

step "vzctl set 101 --ipdel 10.0.0.1 --save: its counts so far stay with 101"
net_del 101 running 10.0.0.1
ct_conf 101 "10.0.0.2 10.0.0.3"
ping_ct 10.0.0.1 2 1000
echo "  (10.0.0.1 is no longer accounted: those pings are not counted)"
vz show

step "vzctl stop 101: vps-net_del with the kernel's IPs, then the umount script"
net_del 101 stopping "10.0.0.2 10.0.0.3"
umount_ct 101
vz status

step "Node shutdown: the init script's stop dumps the counters; then every table is emptied"
nsx "$NODE" "$ROOT/etc/init.d/vzacct" stop
for t in iptables ip6tables; do nsx "$NODE" $t-$VARIANT -w -F; nsx "$NODE" $t-$VARIANT -w -X; done
echo "after the 'reboot', vzacct lines in the kernel: $(nsx "$NODE" iptables-$VARIANT-save | grep -c VZACCT || true)"

step "Boot: the firewall service restores the provider's rules; the init script's start restores vzacct's, before vz starts the containers"
nsx "$NODE" iptables-$VARIANT -w -A FORWARD -s 192.0.2.66 -j DROP
nsx "$NODE" "$ROOT/etc/init.d/vzacct" start
ours

step "vzctl start 101 again (its config now says 10.0.0.2 10.0.0.3)"
mount_ct 101
net_add 101 starting "10.0.0.2 10.0.0.3"
ping_ct 10.0.0.3 5 1500

step "The first dump after midnight closes the day into each container's CSV"
export VZACCT_NOW=$(date -d 'tomorrow 00:05' --iso-8601=seconds)
vz dump
for f in "$WORK"/csv/*.csv; do echo "--- $f"; cat "$f"; done
echo
echo "101 in: 3x1000 + 2x500 + 4x300 = 5200 bytes on day 1; 5x1500 = 7500 after the reboot,"
echo "harvested by the dump after midnight, so it counts for the new day. Out: the replies."
vz show
vz show --json 101
DUMPED_AT=$VZACCT_NOW
unset VZACCT_NOW

step "A quota: 101 may use 20 KB (total) per billing period; thresholds 80 and 100 percent"
# The action program: the shipped tc example, pointed at the demo's veinfo and state (this
# kernel polices nothing, so only what 101 receives is limited).
sed -e "s|^VEINFO=.*|VEINFO=$WORK/veinfo|" -e "s|^STATE=.*|STATE=$WORK/tc|" \
    -e "s|^FROM_CT=.*|FROM_CT=no|" conf-templates/vzacct-threshold-tc > "$WORK/vzacct-threshold"
chmod 755 "$WORK/vzacct-threshold"
printf '       101     2    10     10.0.0.2 10.0.0.3\n       102     2     5     10.0.0.20\n' > "$WORK/veinfo"
printf '[billing]\nthresholds = 80 100\non_threshold = %s\n' "$WORK/vzacct-threshold" >> "$CONF_FILE"
vz set 101 --quota 20KB
ping_ct 10.0.0.3 10 1000
echo "  (101's period so far, in + out, is past 20 KB now)"
VZACCT_NOW=$DUMPED_AT vz dump
echo "--- the limit the action program put on what 101 receives:"
nsx "$NODE" tc class show dev venet0
nsx "$NODE" tc filter show dev venet0 parent 1: | grep -e flowid
echo "--- a second dump acts on nothing: each threshold once per period"
VZACCT_NOW=$DUMPED_AT vz dump

step "Free networks: the world's network 198.51.100.0/24 is the provider's backup net, not billed"
printf '[classes]\nfree = 198.51.100.0/24\n' >> "$CONF_FILE"
VZACCT_NOW=$DUMPED_AT vz sync
ping_ct 10.0.0.20 4 1000
VZACCT_NOW=$DUMPED_AT vz dump
echo "102 in: 4x1000 = 4000 bytes from the free network, counted in IN and again apart as free:"
VZACCT_NOW=$DUMPED_AT vz show 102

step "What the hooks did (the log an operator reads when something goes wrong)"
cat "$WORK/hook.log"

step "vzacct check: every integration point (the fake root's files, iptables, rules, dump age)"
echo "(run as of now, the last dump lies in the future: the demo's clock jumped past midnight;"
echo " and the init script is not enabled yet: check says both)"
nsx "$NODE" "$BIN" --config "$CONF_FILE" check --root "$ROOT" || true
echo
echo "Enabled as chkconfig --add does (S95vzacct before vz's S96vz), and checked at the time of"
echo "that dump: all well."
for level in 2 3 4 5; do
  mkdir -p "$ROOT/etc/rc.d/rc$level.d"
  ln -sf ../init.d/vzacct "$ROOT/etc/rc.d/rc$level.d/S95vzacct"
  ln -sf ../init.d/vz "$ROOT/etc/rc.d/rc$level.d/S96vz"
done
VZACCT_NOW=$DUMPED_AT nsx "$NODE" "$BIN" --config "$CONF_FILE" check --root "$ROOT"

step "The provider's own rule came through untouched, below vzacct's jump"
nsx "$NODE" iptables-$VARIANT-save -c -t filter | grep -e '-A FORWARD'

step "vzacct uninstall: every file put back as it was; the ledger and CSV stay"
nsx "$NODE" "$BIN" uninstall --root "$ROOT"
cat "$SCRIPTS/vps-net_add"

step "vzacct uninstall --purge: a last harvest into the ledger, then vzacct out of the kernel"
nsx "$NODE" "$BIN" --config "$CONF_FILE" uninstall --purge --root "$ROOT"
left=$(nsx "$NODE" iptables-$VARIANT-save -t filter | grep -c VZACCT || true)
echo "lines naming VZACCT left in the IPv4 filter table: $left"
left=$(nsx "$NODE" ipset list -n | grep -c vzacct- || true)
echo "vzacct sets left: $left"
vz show
echo
echo "Demo finished; namespaces are removed on exit."

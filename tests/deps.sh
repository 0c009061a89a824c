#!/usr/bin/env bash
# Installs what vzacct's tests and demo need on Debian 12, if missing. Sourced by the
# demo and the test runner; needs root (the tests create network namespaces). apt waits for
# a lock another apt holds (up to 10 minutes) instead of failing on it.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "vzacct tests and demo need root (network namespaces and iptables); run them as root." >&2
  exit 1
fi
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}
# program:package, each package listed once however many programs it brings.
need=()
for pair in iptables-legacy:iptables iptables-nft:iptables ipset:ipset ip:iproute2 \
            strace:strace setpriv:util-linux unshare:util-linux flock:util-linux \
            ping:iputils-ping systemd-analyze:systemd; do
  prog=${pair%%:*} pkg=${pair#*:}
  if ! command -v "$prog" >/dev/null 2>&1 && [[ " ${need[*]-} " != *" $pkg "* ]]; then
    need+=("$pkg")
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt_get update -qq >/dev/null
  apt_get install -y -qq "${need[@]}" >/dev/null
fi
# Two checkers come unpacked from Debian packages into target/tools rather than installed:
# promtool (checks the Prometheus textfile; installing the prometheus package would start a
# server) and checkbashisms (checks the init script; devscripts would pull in dozens of
# packages for one Perl script).
(
  tools="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools"
  fetch() { # program package
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -e "$tools/usr/bin/$1" ]; then
      echo "fetching $1 (from Debian's $2) into $tools" >&2
      debs=$(mktemp -d)
      apt_get update -qq >/dev/null
      # Root downloads into a root-only temp dir: apt's _apt sandbox user could not write there.
      (cd "$debs" && apt_get download -qq -o APT::Sandbox::User=root "$2")
      mkdir -p "$tools"
      dpkg -x "$debs/$2"_*.deb "$tools"
      rm -rf "$debs"
    fi
  }
  fetch promtool prometheus
  fetch checkbashisms devscripts
)

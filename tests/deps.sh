#!/usr/bin/env bash
# Installs what vzacct's tests and demo need on Debian 12, if missing. Sourced by the
# demo and the test runner; needs root (the tests create network namespaces).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "vzacct tests and demo need root (network namespaces and iptables); run with sudo." >&2
  exit 1
fi
need=()
for pair in iptables-legacy:iptables iptables-nft:iptables ipset:ipset ip:iproute2 \
            strace:strace setpriv:util-linux ping:iputils-ping; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# promtool (the Prometheus textfile test checks vzacct's output with it) comes from Debian's
# prometheus package, unpacked into target/tools rather than installed: installing the package
# would start a Prometheus server.
(
  tools="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools"
  if ! command -v promtool >/dev/null 2>&1 && [ ! -e "$tools/usr/bin/promtool" ]; then
    echo "fetching promtool into $tools" >&2
    debs=$(mktemp -d)
    trap 'rm -rf "$debs"' EXIT
    apt-get update -qq >/dev/null
    # Root downloads into a root-only temp dir: apt's _apt sandbox user could not write there.
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root prometheus)
    mkdir -p "$tools"
    dpkg -x "$debs"/prometheus_*.deb "$tools"
  fi
)

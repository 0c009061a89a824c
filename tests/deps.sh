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

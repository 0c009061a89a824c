#!/usr/bin/env bash
# Builds what the nodes install, into target/dist/:
#   vzacct                          for glibc >= 2.17 (OpenVZ 7, Debian, Ubuntu), by cargo zigbuild
#   vzacct-static                   no dynamic dependency at all (OpenVZ 6 and other old nodes)
#   vzacct-VERSION-1.x86_64.rpm     OpenVZ 7 (rpm 4.11: xz payload, never zstd)
#   vzacct_VERSION_amd64.deb        Debian and Ubuntu nodes
#   man/                            the man pages, generated from the clap definitions
# and first installs its own tools when missing: rpm (rpmbuild), binutils, libc6-dev (the
# static C library) from apt, ziglang from PyPI, cargo-zigbuild from crates.io. Needs root
# for apt only when something is missing. Incremental: a second run rebuilds only what
# changed. The packages' tests are tests/packaging.rs and tests/oldkernel.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
dist=$top/target/dist
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
zigbuild_version=0.24.1

# --- tools -----------------------------------------------------------------------------
need=()
command -v rpmbuild >/dev/null 2>&1 || need+=(rpm)
command -v objdump >/dev/null 2>&1 || need+=(binutils)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
  echo "build.sh: installing ${need[*]} (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt or dpkg run (unattended upgrades on a fresh machine) instead of failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
fi
# cargo-zigbuild runs zig as `python3 -m ziglang` when no zig is on PATH.
if ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "build.sh: installing ziglang (pip)" >&2
  python3 -m pip install --quiet --root-user-action=ignore ziglang==0.17.1
fi
# Asked of cargo, not PATH: cargo finds its subcommands in $CARGO_HOME/bin either way.
if ! cargo install --list | grep -qx "cargo-zigbuild v$zigbuild_version:"; then
  echo "build.sh: installing cargo-zigbuild $zigbuild_version (about 2.5 minutes)" >&2
  cargo install --quiet --locked --version "$zigbuild_version" cargo-zigbuild
fi

mkdir -p "$dist"
step() { echo "build.sh: $*" >&2; }

# --- binaries --------------------------------------------------------------------------
step "vzacct for glibc 2.17 (cargo zigbuild)"
cargo zigbuild --quiet --locked --release --target x86_64-unknown-linux-gnu.2.17
install -m 0755 target/x86_64-unknown-linux-gnu/release/vzacct "$dist/vzacct"

# Its own target dir: other RUSTFLAGS would make the two builds rebuild each other. The
# --target keeps crt-static away from build scripts and proc macros.
step "vzacct-static (crt-static)"
CARGO_TARGET_DIR=$top/target/static RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --locked --release --target x86_64-unknown-linux-gnu
install -m 0755 target/static/x86_64-unknown-linux-gnu/release/vzacct "$dist/vzacct-static"

step "man pages"
rm -rf "$dist/man"
cargo run --quiet --locked --example manpage -- "$dist/man"

# --- package contents, shared by both formats -------------------------------------------
# stage DIR: the files both packages ship, laid out as on the node.
stage() {
  local r=$1
  install -D -m 0755 "$dist/vzacct" "$r/usr/sbin/vzacct"
  install -D -m 0644 conf-templates/vzacct.conf "$r/etc/vz/vzacct.conf"
  install -D -m 0644 packaging/vzacct.logrotate "$r/etc/logrotate.d/vzacct"
  install -D -m 0644 README.md "$r/usr/share/doc/vzacct/README.md"
  install -D -m 0644 LICENSE "$r/usr/share/doc/vzacct/LICENSE"
  # The example threshold actions, outside /usr/share/doc, which minimal images and
  # `rpm --excludedocs` leave out: an operator copies one to /etc/vz/vzacct-threshold, or
  # runs vzacct-threshold-tc's hourly sweep from here.
  install -d -m 0755 "$r/usr/share/vzacct" "$r/usr/share/vzacct/examples"
  install -m 0755 conf-templates/vzacct-threshold-mail conf-templates/vzacct-threshold-tc \
    "$r/usr/share/vzacct/examples/"
  install -d -m 0755 "$r/usr/share/man/man8"
  local page
  for page in "$dist"/man/*.8; do
    gzip -9 -n -c "$page" >"$r/usr/share/man/man8/$(basename "$page").gz"
    chmod 0644 "$r/usr/share/man/man8/$(basename "$page").gz"
  done
  install -d -m 0700 "$r/var/log/vzacct"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "vzacct-$version-1.x86_64.rpm"
mkdir -p "$work/rpm"/{BUILD,RPMS,SOURCES,SPECS,SRPMS,BUILDROOT,stage}
stage "$work/rpm/stage"
rpmbuild -bb --quiet --target x86_64-linux \
  --define "_topdir $work/rpm" \
  --define "vzacct_version $version" \
  --define "vzacct_stage $work/rpm/stage" \
  packaging/vzacct.spec >"$work/rpmbuild.log" 2>&1 || { cat "$work/rpmbuild.log" >&2; exit 1; }
rm -f "$dist"/vzacct-*.rpm
install -m 0644 "$work/rpm/RPMS/x86_64/vzacct-$version-1.x86_64.rpm" "$dist/"

step "vzacct_${version}_amd64.deb"
deb=$work/deb
stage "$deb"
install -D -m 0644 packaging/deb/copyright "$deb/usr/share/doc/vzacct/copyright"
install -d -m 0755 "$deb/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm "$deb/DEBIAN/"
install -m 0644 packaging/deb/triggers "$deb/DEBIAN/"
printf '/etc/vz/vzacct.conf\n' >"$deb/DEBIAN/conffiles"
size=$(du -k -s --exclude=DEBIAN "$deb" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" packaging/deb/control >"$deb/DEBIAN/control"
rm -f "$dist"/vzacct_*.deb
dpkg-deb --root-owner-group -Zxz --build "$deb" "$dist/vzacct_${version}_amd64.deb" >/dev/null

ls -l "$dist" >&2

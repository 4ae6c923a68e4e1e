#!/usr/bin/env bash
# Installs virt-builder, virt-index-validate and virt-resize (Debian
# guestfs-tools) without apt-get install, which here conflicts with the
# qemu-utils backport: the debs are unpacked under $PREFIX and wrappers in
# $BIN set the library path. Idempotent: does nothing when the wrappers
# already run. See the reference notes on catalogs, section 1.
set -euo pipefail
PREFIX="${GUESTFS_PREFIX:-/opt/guestfs-tools}"
BIN="${GUESTFS_BIN:-/usr/local/bin}"
TOOLS=(virt-builder virt-index-validate virt-resize)

if virt-builder --version >/dev/null 2>&1 && virt-index-validate --help >/dev/null 2>&1 \
  && command -v virt-resize >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
# What virt-builder runs besides itself: curl to download, xz to unpack, gpg
# to check a signed index; and the shared libraries the unpacked ones link.
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends curl xz-utils gpg libglib2.0-0 \
  libcurl3-gnutls libxml2 libjansson4 libnuma1 libtirpc3 >/dev/null
debs="$(mktemp -d)"
trap 'rm -rf "$debs"' EXIT
(cd "$debs" && chmod 0777 . && apt-get download -qq guestfs-tools libguestfs0 libvirt0 libfuse2 libnl-3-200 \
  libssh-4 libyajl2)
rm -rf "$PREFIX/root"
mkdir -p "$PREFIX/root" "$BIN"
for deb in "$debs"/*.deb; do
  dpkg-deb -x "$deb" "$PREFIX/root"
done
libs="$PREFIX/root/usr/lib/x86_64-linux-gnu:$PREFIX/root/lib/x86_64-linux-gnu"
for tool in "${TOOLS[@]}"; do
  cat >"$BIN/$tool" <<WRAPPER
#!/bin/sh
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$PREFIX/root/usr/bin/$tool" "\$@"
WRAPPER
  chmod 0755 "$BIN/$tool"
done
virt-builder --version

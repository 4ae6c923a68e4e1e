#!/usr/bin/env bash
# Installs virt-builder, virt-index-validate and virt-resize (Debian's
# guestfs-tools) for the interop tests. `apt-get install guestfs-tools`
# conflicts with the qemu-utils backport here, so the few packages it needs
# are unpacked under /opt/guestfs-tools instead, with a wrapper per tool in
# /usr/local/bin that points the loader at their libraries. Idempotent: a
# second run finds the wrappers working and does nothing.
set -euo pipefail

root=/opt/guestfs-tools
tools=(virt-builder virt-index-validate virt-resize)

if command -v virt-builder >/dev/null && virt-builder --version >/dev/null 2>&1 \
  && command -v virt-index-validate >/dev/null && command -v virt-resize >/dev/null; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# virt-builder runs curl, xz and gpg itself.
apt-get install -y -qq --no-install-recommends curl xz-utils gpg gpgv >/dev/null
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
(cd "$debs" && apt-get download -qq guestfs-tools libguestfs0 libvirt0 libfuse2 libnl-3-200 \
  libssh-4 libyajl2)
mkdir -p "$root"
for deb in "$debs"/*.deb; do
  dpkg-deb -x "$deb" "$root"
done
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
for tool in "${tools[@]}"; do
  cat > "/usr/local/bin/$tool" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/$tool" "\$@"
WRAPPER
  chmod 755 "/usr/local/bin/$tool"
done
virt-builder --version

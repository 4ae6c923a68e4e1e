#!/usr/bin/env bash
# Installs Debian 13 (trixie)'s systemd-sysupdate and systemd-pull (systemd 257) for the tests
# that run systemd's own update tools against a site (tests/it/systemd_tools.rs). Bookworm ships
# no systemd-sysupdate, and trixie's cannot be installed here (it needs trixie's glibc), so the
# debs are fetched with apt-get download from a private sources.list (the system's apt sources,
# state and cache are not touched), unpacked with dpkg-deb -x, and run through trixie's own
# loader with --library-path, which (unlike LD_LIBRARY_PATH) does not leak into what they run
# (gpg). See the reference notes on delta downloads and systemd, A1 and A2.
#
# Layout under $VMCAST_TRIXIE_ROOT (default /opt/vmcast-ci/trixie):
#   systemd-sysupdate, systemd-pull-257   the wrappers the tests run
#   fs/                                   the unpacked debs
#   apt/                                  the private apt configuration and state
#   packages                              what was unpacked, name and version
#
# The packages: systemd-container (both binaries), libc6, and every library package their
# Depends reach (systemd and D-Bus are not followed: nothing here runs them). Then the loader
# must find every library the binaries load inside fs/, or the script fails naming the ones it
# found on the host instead. Idempotent: does nothing when the wrappers already run the
# binaries of this script's version.
set -euo pipefail
ROOT="${VMCAST_TRIXIE_ROOT:-/opt/vmcast-ci/trixie}"
MIRROR="${VMCAST_TRIXIE_MIRROR:-http://deb.debian.org}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Whatever changes what is installed: a change here reinstalls.
STAMP="$(sha256sum "$0" | cut -c1-16)"
# Libraries systemd 257 dlopen()s on the paths the tests take (zstd and lz4 for compressed
# images); the rest of its dlopen list (cryptsetup, tpm2, fido2, libarchive...) is not used by
# url-file transfers to regular files, and is not installed.
EXTRA=(liblz4-1 libzstd1)

die() {
  printf 'install-sysupdate: %s\n' "$*" >&2
  exit 1
}

# Whether the wrapper $1 runs a systemd 257 (captured first: grep -q under pipefail could
# SIGPIPE the writer).
runs() {
  local version
  version="$("$ROOT/$1" --version 2>/dev/null)" || return 1
  [[ "$version" == "systemd 257 "* ]]
}

if [ "$(cat "$ROOT/stamp" 2>/dev/null)" = "$STAMP" ] && runs systemd-sysupdate && runs systemd-pull-257; then
  exit 0
fi
start=$SECONDS
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb (Debian)"
[ -r "$KEYRING" ] || die "no $KEYRING (Debian package debian-archive-keyring) to check trixie's Release with"
[ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 is supported (the loader path is x86_64's)"

apt_dir="$ROOT/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/sources.list" <<SOURCES
deb [signed-by=$KEYRING] $MIRROR/debian trixie main
deb [signed-by=$KEYRING] $MIRROR/debian trixie-updates main
deb [signed-by=$KEYRING] $MIRROR/debian-security trixie-security main
SOURCES
: >"$apt_dir/status"
# The system's apt.conf.d still applies (a proxy set there is wanted), but not its sources,
# preferences, state or cache; no DEP-11 or translations (not needed, and 5 MB more).
APT=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
  -o "Dir::State=$apt_dir" -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir/cache" -o APT::Architecture=amd64 -o APT::Architectures=amd64
  -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
  -o Acquire::Retries=3
)
apt-get "${APT[@]}" -qq --error-on=any update || die "apt-get update of trixie from $MIRROR failed (is it reachable?)"

apt-cache "${APT[@]}" show systemd-container >/dev/null 2>&1 || die "trixie's index has no systemd-container"

# The closure: breadth first over Depends and Pre-Depends, following only library packages.
declare -A seen=()
queue=(systemd-container libc6 "${EXTRA[@]}")
packages=()
while [ ${#queue[@]} -gt 0 ]; do
  next=()
  for p in "${queue[@]}"; do
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    packages+=("$p")
  done
  mapfile -t deps < <(apt-cache "${APT[@]}" depends --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "${queue[@]}" \
    | sed -n 's/^ *|\{0,1\}\(Pre-\)\{0,1\}Depends: \([a-z0-9][a-z0-9.+-]*\)$/\2/p' | sort -u)
  for d in "${deps[@]}"; do
    case "$d" in lib* | zlib1g) [ -z "${seen[$d]:-}" ] && next+=("$d") ;; esac
  done
  queue=("${next[@]+"${next[@]}"}")
done

debs="$(mktemp -d)"
trap 'rm -rf "$debs" "$ROOT/fs.new"' EXIT
chmod 0777 "$debs" # apt-get download drops to the _apt user
(cd "$debs" && apt-get "${APT[@]}" -qq download "${packages[@]}") \
  || die "apt-get download of ${#packages[@]} trixie packages from $MIRROR failed"
count=$(find "$debs" -name '*.deb' | wc -l)
[ "$count" -eq ${#packages[@]} ] || die "downloaded $count debs for ${#packages[@]} packages"
bytes=$(du -cb "$debs"/*.deb | tail -n 1 | cut -f1)
for deb in "$debs"/*.deb; do dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb"; done >"$ROOT/packages"

rm -rf "$ROOT/fs.new"
mkdir -p "$ROOT/fs.new"
for deb in "$debs"/*.deb; do
  dpkg-deb -x "$deb" "$ROOT/fs.new" || die "dpkg-deb -x $deb failed"
done

fs="$ROOT/fs"
lib="$fs/usr/lib/x86_64-linux-gnu"
loader="$lib/ld-linux-x86-64.so.2"
libpath="$lib:$lib/systemd"
# Every library the binaries link, found in fs.new (checked before it replaces fs).
new_lib="$ROOT/fs.new/usr/lib/x86_64-linux-gnu"
for bin in systemd-sysupdate systemd-pull; do
  [ -x "$ROOT/fs.new/usr/lib/systemd/$bin" ] || die "systemd-container has no /usr/lib/systemd/$bin"
  objects=("$ROOT/fs.new/usr/lib/systemd/$bin")
  for extra in libzstd.so.1 liblz4.so.1; do objects+=("$new_lib/$extra"); done
  for object in "${objects[@]}"; do
    listing="$("$new_lib/ld-linux-x86-64.so.2" --list --library-path "$new_lib:$new_lib/systemd" "$object" 2>&1)" \
      || die "trixie's loader cannot load $object: $listing"
    outside="$(printf '%s\n' "$listing" | grep '=>' | grep -v "=> $ROOT/fs.new/" || true)"
    [ -z "$outside" ] || die "$object loads libraries from outside $ROOT/fs.new (a package is missing from the closure):
$outside"
  done
done
# Documentation is 5 MB of the 53.
rm -rf "$ROOT/fs.new/usr/share/doc" "$ROOT/fs.new/usr/share/man" "$ROOT/fs.new/usr/share/locale" \
  "$ROOT/fs.new/usr/share/lintian"
rm -rf "$fs"
mv "$ROOT/fs.new" "$fs"

wrapper() { # name, binary
  cat >"$ROOT/$1.new" <<WRAPPER
#!/bin/sh
# trixie's $2 (systemd 257) through trixie's loader and libraries; written by
# .ci/install-sysupdate.sh.
exec "$loader" --library-path "$libpath" --argv0 "$2" "$fs/usr/lib/systemd/$2" "\$@"
WRAPPER
  chmod 0755 "$ROOT/$1.new"
  mv "$ROOT/$1.new" "$ROOT/$1"
}
wrapper systemd-sysupdate systemd-sysupdate
wrapper systemd-pull-257 systemd-pull
runs systemd-sysupdate || die "$ROOT/systemd-sysupdate does not run"
runs systemd-pull-257 || die "$ROOT/systemd-pull-257 does not run"
# The indexes are 10 MB and stale by the next run: drop them, keep the sources.list.
rm -rf "$apt_dir/lists" "$apt_dir/cache" "$apt_dir"/*.bin
echo "$STAMP" >"$ROOT/stamp"
printf 'install-sysupdate: %s debs (%s MB) unpacked in %s in %ss: %s\n' "$count" \
  "$(((bytes + 500000) / 1000000))" "$fs" "$((SECONDS - start))" \
  "$("$ROOT/systemd-sysupdate" --version | sed -n 1p)"

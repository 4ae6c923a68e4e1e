#!/usr/bin/env bash
# Installs vmcast-gen for the GitHub Action (action.yml, install/action.yml), or for any CI that
# has this repository checked out at a pinned tag or commit: built from that checkout, with its
# Cargo.lock, so that pinning the checkout pins the binary. A version from crates.io is an
# explicit opt-in (VMCAST_VERSION), and is pinned by nothing else.
#
#   vmcast-install.sh cache-key   prints path=, key= and restore-keys= for actions/cache, and
#                                 appends them to $GITHUB_OUTPUT when it is set
#   vmcast-install.sh install     builds and installs into that path, unless the build there is
#                                 already of these sources; appends its bin directory to
#                                 $GITHUB_PATH when it is set, else prints it
#
# The key names the sources the binary is built from (Cargo.toml, Cargo.lock, src/, templates/):
# a cache hit is this very build, and nothing is compiled. The restore key names Cargo.lock
# alone: a cache of an older commit with the same dependencies brings its compiled dependencies
# (the cargo target directory), and only vmcast-gen itself is compiled again.
#
# Inputs, from the environment (empty means unset):
#   VMCAST_VERSION        a version of vmcast-gen on crates.io to install instead of this checkout
#   VMCAST_INSTALL_ROOT   where to install (default ~/.cache/vmcast-gen-install)
set -euo pipefail

die() {
  printf 'vmcast-install: error: %s\n' "$*" >&2
  exit 1
}

# Prints the command, then runs it.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  "$@"
}

source_dir=$(cd "$(dirname "$0")/.." && pwd)
version=${VMCAST_VERSION:-}
root=${VMCAST_INSTALL_ROOT:-$HOME/.cache/vmcast-gen-install}
platform="${RUNNER_OS:-$(uname -s)}-$(uname -m)"

short_sha256() {
  sha256sum | cut -c1-16
}

# What the installed binary is: these sources, or a version from crates.io.
identity() {
  if [ -n "$version" ]; then
    printf 'crates.io-%s\n' "$version"
  else
    (
      cd "$source_dir"
      find Cargo.toml Cargo.lock src templates -type f -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | short_sha256
    ) | sed 's/^/source-/'
  fi
}

[ -f "$source_dir/Cargo.lock" ] || die "no Cargo.lock in $source_dir: run this from a checkout of vmcast-gen"
lock=$(short_sha256 <"$source_dir/Cargo.lock")
id=$(identity)

case "${1:-}" in
  cache-key)
    outputs="path=$root
key=vmcast-gen-$platform-lock-$lock-$id
restore-keys=vmcast-gen-$platform-lock-$lock-"
    if [ -n "$version" ]; then
      # A crates.io build has its own dependencies: no other build's will do.
      outputs="path=$root
key=vmcast-gen-$platform-$id
restore-keys="
    fi
    printf '%s\n' "$outputs"
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
      printf '%s\n' "$outputs" >>"$GITHUB_OUTPUT"
    fi
    ;;
  install)
    stamp="$root/.vmcast-install"
    if [ -x "$root/bin/vmcast-gen" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$id" ]; then
      printf 'vmcast-gen (%s) is in %s already\n' "$id" "$root"
    elif [ -n "$version" ]; then
      run cargo install --locked vmcast-gen --version "$version" --root "$root" --force
      printf '%s\n' "$id" >"$stamp"
    else
      # The target directory is kept in the cache: dependencies compiled for the same Cargo.lock
      # are not compiled again.
      run env CARGO_TARGET_DIR="$root/target" cargo install --locked --path "$source_dir" \
        --root "$root" --force
      printf '%s\n' "$id" >"$stamp"
    fi
    "$root/bin/vmcast-gen" --version
    if [ -n "${GITHUB_PATH:-}" ]; then
      printf '%s\n' "$root/bin" >>"$GITHUB_PATH"
    else
      printf 'installed in %s/bin: put it on PATH\n' "$root"
    fi
    ;;
  *)
    die "usage: vmcast-install.sh cache-key|install"
    ;;
esac

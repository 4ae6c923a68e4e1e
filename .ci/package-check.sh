#!/usr/bin/env bash
# Checks what `cargo publish` would upload: lists the package's files, fails on any file over
# 4 MiB or any key/secret file, then builds the .crate without compiling it.
# PACKAGE_VERIFY=1 also runs the verified `cargo package`, which compiles the packaged crate
# from the .crate alone (slow: a full build of the dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

max_bytes=$((4 * 1024 * 1024))

section() { printf '\n=== %s ===\n' "$*"; }

section "cargo package --list"
list=$(cargo package --list --allow-dirty)
printf '%s\n' "$list"

bad=0
sized=()
while IFS= read -r path; do
  [ -n "$path" ] || continue
  lower=${path,,}
  case "$lower" in
    *.key | *secret*)
      echo "error: key or secret file in the package: $path" >&2
      bad=1
      ;;
  esac
  # .cargo_vcs_info.json and Cargo.toml.orig are written by cargo; they are not on disk.
  [ -f "$path" ] || continue
  size=$(stat -c %s -- "$path")
  sized+=("$size $path")
  if [ "$size" -gt "$max_bytes" ]; then
    echo "error: $path is $size bytes, over the 4 MiB limit" >&2
    bad=1
  fi
done <<<"$list"

echo
echo "largest files:"
printf '%s\n' "${sized[@]}" | sort -rn | head -n 10

if [ "$bad" -ne 0 ]; then
  echo "error: the package contents fail the checks above; fix \`include\` in Cargo.toml" >&2
  exit 1
fi

section "cargo package --no-verify"
cargo package --allow-dirty --no-verify

if [ "${PACKAGE_VERIFY:-0}" = 1 ]; then
  section "cargo package (verified build)"
  cargo package --allow-dirty
fi

#!/usr/bin/env bash
# Warm rebuilds against cold builds in every image mode: a rebuild where
# nothing changed should read no image and copy none. Rounds interleave cold
# and warm, so the ratios hold on a shared, noisy machine. Prints medians and
# the ratios warm/cold as a Markdown table.
#
#   bench/rebuild.sh [ROUNDS]     (default 5; needs ~11 GiB free under $TMPDIR)
#
# Sites:
#   big    4 images x 256 MiB of random data
#   small  1,000 images x 4 MiB, one release each
#   tiny   1,000 images x 4 KiB, one release each: a measure of the fixed
#          cost per release, since hashing 4 KiB costs nothing
# each built with image_mode = none, link and copy. A cold build starts with
# no hash cache and no output; a first rebuild follows it, then a second,
# nothing changed. The first rebuild has no spare site yet (the cold build
# replaced none) and makes every directory and link or copy again; from the
# second on, every rebuild stages in the spare the one before left. Every
# image is in the page cache for all three: what is measured is what the
# build does, not the disk's reads. The target is warm <= 5% of cold.
set -euo pipefail
rounds=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/vmcast-gen"
key="$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.key"

(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-rebuild.XXXXXX")
trap 'rm -rf "$work"' EXIT

release() { # release DIR VERSION
  mkdir -p "$1"
  printf 'version = "%s"\ndate = 2026-01-01\nnotes = "bench"\n' "$2" >"$1/release.toml"
}

echo "bench: making the images in $work" >&2
for i in 1 2 3 4; do
  release "$work/big/app/1.$i" "1.$i"
  head -c $((256 << 20)) /dev/urandom >"$work/big/app/1.$i/big-$i.raw"
done
for i in $(seq 1 1000); do
  release "$work/small/app/$i.0" "$i.0"
  head -c $((4 << 20)) /dev/urandom >"$work/small/app/$i.0/img-$i.raw"
  release "$work/tiny/app/$i.0" "$i.0"
  head -c 4096 /dev/urandom >"$work/tiny/app/$i.0/img-$i.raw"
done
# The images are world-readable, so link mode links them.
chmod -R a+rX "$work/big" "$work/small" "$work/tiny"

sites=()
for tree in big small tiny; do
  for mode in none link copy; do
    dir="$work/$tree-$mode"
    mkdir -p "$dir"
    cat >"$dir/vmcast.toml" <<EOF
title = "bench"
description = "bench"
base_url = "https://bench.example.com/"
secret_key = "$key"
releases_dir = "$work/$tree"
image_mode = "$mode"
EOF
    sites+=("$tree-$mode")
  done
done

# Read every image once, so every build finds them in the page cache.
find "$work/big" "$work/small" "$work/tiny" -type f -exec cat {} + >/dev/null

now() { date +%s%N; }
declare -A times
build() { # build SITE
  "$bin" build --quiet --config "$work/$1/vmcast.toml" --out "$work/$1/public" \
    --cache-dir "$work/$1/cache" >/dev/null 2>"$work/stderr" || {
    echo "bench: the build of $1 failed:" >&2; cat "$work/stderr" >&2; exit 1
  }
}
timed() { # timed NAME CMD...
  local t0 t1
  t0=$(now)
  "${@:2}"
  t1=$(now)
  times[$1]+="$(((t1 - t0) / 1000)) "
}

for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  for site in "${sites[@]}"; do
    # Cold: no cache, no output to take anything from.
    rm -rf "$work/$site/cache" "$work/$site/public" "$work/$site/.public.spare"
    sync
    timed "$site-cold" build "$site"
    timed "$site-first" build "$site"
    timed "$site-warm" build "$site"
  done
done

median() { tr ' ' '\n' <<<"${times[$1]}" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v u="$(median "$1")" 'BEGIN {printf "%.0f", u/1000}'; }
ratio() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN {printf "%.3f", a/b}'; }
label() {
  case $1 in
    big-*) printf '4 x 256 MiB, image_mode = %s' "${1#big-}" ;;
    small-*) printf '1,000 x 4 MiB, image_mode = %s' "${1#small-}" ;;
    tiny-*) printf '1,000 x 4 KiB (fixed costs), image_mode = %s' "${1#tiny-}" ;;
  esac
}

cat <<EOF

vmcast-gen rebuild benchmark: $(nproc) cores, $rounds rounds, medians (ms), $(date -u +%Y-%m-%d)

| site | cold build | first rebuild | first/cold | warm rebuild | warm/cold | target |
|---|---:|---:|---:|---:|---:|---|
EOF
for site in "${sites[@]}"; do
  target='<= 0.05'
  [[ $site == tiny-* ]] && target='(fixed costs)'
  echo "| $(label "$site") | $(ms "$site-cold") | $(ms "$site-first") | $(ratio "$site-first" "$site-cold") | $(ms "$site-warm") | $(ratio "$site-warm" "$site-cold") | $target |"
done

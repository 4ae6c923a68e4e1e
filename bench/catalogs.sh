#!/usr/bin/env bash
# What the catalogs cost: a cold build with every catalog on (JSON Feed,
# simplestreams, Vagrant and the virt-builder index, whose SHA-512 is
# computed in the hashing read; the images are raw, which Vagrant boxes and
# LXD's fingerprint leave out, so SHA-512 is the only cost added to a read)
# against a baseline measured in the same run: the same files split over two
# parallel processes, each running `openssl dgst -sha256` and then
# `openssl dgst -sha512` on its files. Rounds are interleaved, so the ratio
# holds on a shared, noisy machine. Also shows that a warm rebuild with every
# catalog on reads no image. Prints medians and ratios as a Markdown table.
#
#   bench/catalogs.sh [ROUNDS]    (default 5; needs ~2.1 GiB free under $TMPDIR)
set -euo pipefail
rounds=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/vmcast-gen"
key="$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.key"

command -v openssl >/dev/null || { echo "bench: openssl is required" >&2; exit 1; }
(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-bench-catalogs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Fast deterministic pseudo-random bytes: AES-CTR keystream.
fill() { # fill FILE SIZE SEED
  # openssl dies of SIGPIPE when head has enough; that is the plan.
  { openssl enc -aes-128-ctr -nosalt -pass "pass:$3" -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c "$2" >"$1"
}

# Eight 256 MiB raw disks, each a release virt-builder can list (an arch,
# raw, served beside the site).
echo "bench: building the tree in $work" >&2
cat >"$work/vmcast.toml" <<EOF
title = "bench"
description = "bench"
base_url = "https://bench.example.com/"
secret_key = "$key"
image_mode = "none"

[catalogs]
json_feed = true
simplestreams = true
vagrant = true
virt_builder = true
EOF
# The same site with no catalog: what SHA-256 alone costs.
sed '/^\[catalogs\]/,$d' "$work/vmcast.toml" >"$work/plain.toml"
for i in 1 2 3 4 5 6 7 8; do
  dir="$work/releases/app/1.$i"
  mkdir -p "$dir"
  printf 'version = "1.%s"\ndate = 2026-01-0%s\nnotes = "bench"\n\n[requirements]\narch = "x86_64"\n' \
    "$i" "$i" >"$dir/release.toml"
  fill "$dir/app-1.$i.raw" $((256 << 20)) "big$i"
done
mapfile -t files < <(find "$work/releases/" -type f -name '*.raw' | sort)
half_a=("${files[@]:0:4}"); half_b=("${files[@]:4}")
# Every case reads from the page cache.
cat "${files[@]}" >/dev/null

now() { date +%s%N; }
declare -A times
timed() { # timed NAME CMD...
  local t0 t1; t0=$(now)
  if ! "${@:2}" >"$work/stdout" 2>"$work/stderr"; then
    echo "bench: case $1 failed:" >&2; cat "$work/stderr" >&2; exit 1
  fi
  t1=$(now)
  times[$1]+="$(((t1 - t0) / 1000)) "
}
build() { # build CONFIG ARGS...
  "$bin" build --config "$work/$1.toml" --out "$work/public-$1" "${@:2}"
}
digests() { openssl dgst -sha256 "$@" >/dev/null && openssl dgst -sha512 "$@" >/dev/null; }
openssl2() {
  digests "${half_a[@]}" & local p=$!
  digests "${half_b[@]}"
  wait "$p"
}

for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  # Odd rounds start with the baseline, even ones with the build.
  [ $((r % 2)) = 1 ] && timed openssl2 openssl2
  timed cold build vmcast --no-cache
  grep -q '^Catalog virt_builder: virt-builder/index$' "$work/stdout" \
    || { echo "bench: the index does not list every image:" >&2; cat "$work/stdout" >&2; exit 1; }
  [ $((r % 2)) = 0 ] && timed openssl2 openssl2
  timed nocatalogs build plain --no-cache
done

build vmcast --cache-dir "$work/cache" >/dev/null 2>&1 # cold, fills the cache
for r in $(seq 1 "$rounds"); do timed warm build vmcast --cache-dir "$work/cache"; done
warm_line=$(sed -n 2p "$work/stdout")
case "$warm_line" in
  "Hashed 0 image(s), 0 B (0 bytes),"*) ;;
  *) echo "bench: the warm rebuild read images: $warm_line" >&2; exit 1 ;;
esac

median() { tr ' ' '\n' <<<"${times[$1]}" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v u="$(median "$1")" 'BEGIN {printf "%.0f", u/1000}'; }
ratio() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN {printf "%.3f", a/b}'; }
# The median over rounds of each round's ratio: the two cases of a round ran
# back to back, under the same load.
paired() {
  paste <(tr ' ' '\n' <<<"${times[$1]}" | grep .) <(tr ' ' '\n' <<<"${times[$2]}" | grep .) \
    | awk '{print $1/$2}' | sort -g \
    | awk '{a[NR]=$1} END {printf "%.3f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
all() { tr ' ' '\n' <<<"${times[$1]}" | grep . | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1/1000}'; }

cat <<EOF

vmcast-gen catalog benchmark: $(nproc) cores, $rounds rounds, medians (ms), $(date -u +%Y-%m-%d)
tree: ${#files[@]} raw images x 256 MiB, image_mode = none, every image listed by virt-builder/index

| case | ms (median) | each round, in order | ratio of medians | median of per-round ratios | target |
|---|---:|---|---:|---:|---|
| baseline: 2 x (openssl dgst -sha256; openssl dgst -sha512) | $(ms openssl2) | $(all openssl2) | 1 | 1 | |
| cold build, every catalog on | $(ms cold) | $(all cold) | $(ratio cold openssl2) | $(paired cold openssl2) | <= 1.15 |
| cold build, no catalogs (SHA-256 only) | $(ms nocatalogs) | $(all nocatalogs) | $(ratio nocatalogs openssl2) | $(paired nocatalogs openssl2) | |
| warm rebuild, every catalog on | $(ms warm) | $(all warm) | $(ratio warm cold) of cold | | reads no image |

warm rebuild summary: $warm_line
EOF

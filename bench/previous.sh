#!/usr/bin/env bash
# build --previous against a cold build of the same site, measured in one run
# and interleaved round by round, so the ratio holds on a shared machine.
#
#   bench/previous.sh [ROUNDS]     (default 5; needs ~1.2 GiB, and 1 GiB a round, free under $TMPDIR)
#
# The site: 1,001 releases of one 1 MiB image each. The cold build reads all
# 1,001 images. The release from a stateless runner holds only the newest
# release's image (the 1,000 earlier ones are absent, as on a fresh CI runner,
# so not one byte of them can be read) and builds on the published output of
# the cold build with --previous. Both builds use a fresh hash cache and
# image_mode = "copy". Prints medians and the ratio as a Markdown table.
set -euo pipefail
rounds=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/vmcast-gen"
(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-bench-previous.XXXXXX")
trap 'rm -rf "$work"' EXIT
key="$work/bench.key"
install -m 600 "$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.key" "$key"

site() { # site DIR
  mkdir -p "$1/releases/app"
  cat >"$1/vmcast.toml" <<CONF
title = "bench"
description = "bench"
base_url = "https://bench.example.com/"
secret_key = "$key"
CONF
}
release() { # release SITE N
  local dir="$1/releases/app/1.$2.0"
  mkdir -p "$dir"
  printf 'version = "1.%s.0"\ndate = 2026-01-01\nnotes = "Release %s."\n' "$2" "$2" >"$dir/release.toml"
  head -c 1048576 /dev/urandom >"$dir/app-1.$2.0.raw"
}

full="$work/full"; runner="$work/runner"
site "$full"; site "$runner"
for n in $(seq 0 1000); do release "$full" "$n"; done
# The runner: every release.toml, but only the newest release's image.
cp -r "$full/releases" "$runner/"
find "$runner/releases" -name '*.raw' ! -name 'app-1.1000.0.raw' -delete
# The published site: a cold build of every release but the newest.
mv "$full/releases/app/1.1000.0" "$work/newest"
SOURCE_DATE_EPOCH=1790000000 "$bin" build -q -c "$full/vmcast.toml" --no-cache --out "$work/published"
mv "$work/newest" "$full/releases/app/1.1000.0"

# Milliseconds of one run; the builds' warnings (old images not in this
# output) are expected and dropped.
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Each round builds into new directories, removed only at the end: on ext4
# a file made right after an `rm -rf` of a site's thousand files is slow to
# make (the allocator steps over every inode freed in the last minute), and
# a runner does not remove a site before it builds one.
cold=(); prev=()
for r in $(seq "$rounds"); do
  cold+=("$(ms env SOURCE_DATE_EPOCH=1790086400 "$bin" build -q -c "$full/vmcast.toml" --cache-dir "$work/cache-cold-$r" --out "$work/out-cold-$r")")
  prev+=("$(ms env SOURCE_DATE_EPOCH=1790086400 "$bin" build -q -c "$runner/vmcast.toml" --cache-dir "$work/cache-prev-$r" --out "$work/out-prev-$r" --previous "$work/published")")
done
c=$(printf '%s\n' "${cold[@]}" | median); p=$(printf '%s\n' "${prev[@]}" | median)
# The two builds publish the same releases with the same digests.
cmp <(grep -c '<item>' "$work/out-cold-1/feed.xml") <(grep -c '<item>' "$work/out-prev-1/feed.xml")
cmp "$work/out-cold-1/SHA256SUMS" "$work/out-prev-1/SHA256SUMS"
echo "| case (median of $rounds, ms) | cold build | --previous | ratio |"
echo "|---|---:|---:|---:|"
awk -v c="$c" -v p="$p" 'BEGIN { printf "| 1,001 releases, 1,000 of them published before | %d | %d | %.1f%% |\n", c, p, 100 * p / c }'

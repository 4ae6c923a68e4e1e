#!/usr/bin/env bash
# Hashing benchmark for vmcast-gen against public baselines, measured in one
# run and interleaved round by round, so the ratios hold on a shared, noisy
# machine. Prints medians and ratios as a Markdown table.
#
#   bench/hash.sh [ROUNDS]        (default 5; needs ~7 GiB free under $TMPDIR)
#
# Cases:
#   cold  8 x 256 MiB images + 24 small files, no cache, image_mode = none;
#         vs one `sha256sum` over the files and two parallel `openssl dgst -sha256`
#   warm  1,000 images x 4 MiB: a rebuild with nothing changed vs a cold build
#   huge  one 2 GiB image + 7 small ones vs one `openssl dgst -sha256`
#   copy  the cold tree with image_mode = copy vs none (one read for both)
#   rss   peak memory of a build over a 4 GiB sparse image (/usr/bin/time -v)
set -euo pipefail
rounds=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/vmcast-gen"
key="$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.key"

need() { command -v "$1" >/dev/null || { echo "bench: $1 is required" >&2; exit 1; }; }
need openssl; need sha256sum
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is required (apt-get install time)" >&2; exit 1; }

(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Fast deterministic pseudo-random bytes: AES-CTR keystream.
fill() { # fill FILE SIZE SEED
  # openssl dies of SIGPIPE when head has enough; that is the plan.
  { openssl enc -aes-128-ctr -nosalt -pass "pass:$3" -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c "$2" >"$1"
}

site() { # site DIR MODE
  mkdir -p "$1"
  cat >"$1/vmcast.toml" <<EOF
title = "bench"
description = "bench"
base_url = "https://bench.example.com/"
secret_key = "$key"
image_mode = "$2"
EOF
}

release() { # release DIR VERSION
  mkdir -p "$1"
  printf 'version = "%s"\ndate = 2026-01-01\nnotes = "bench"\n' "$2" >"$1/release.toml"
}

echo "bench: building the trees in $work" >&2
site "$work/cold" none
for i in 1 2 3 4 5 6 7 8; do
  release "$work/cold/releases/app/1.$i" "1.$i"
  fill "$work/cold/releases/app/1.$i/big-$i.raw" $((256 << 20)) "big$i"
  for j in 1 2 3; do fill "$work/cold/releases/app/1.$i/small-$j.raw" $((64 << 10)) "s$i$j"; done
done
site "$work/copy" copy
ln -s "$work/cold/releases" "$work/copy/releases"

site "$work/warm" none
for i in $(seq 1 1000); do
  release "$work/warm/releases/app/$i.0" "$i.0"
  fill "$work/warm/releases/app/$i.0/img-$i.raw" $((4 << 20)) "w$i"
done

site "$work/huge" none
release "$work/huge/releases/app/1.0" "1.0"
fill "$work/huge/releases/app/1.0/huge.raw" $((2048 << 20)) huge
for j in 1 2 3 4 5 6 7; do fill "$work/huge/releases/app/1.0/small-$j.raw" $((1 << 20)) "h$j"; done

site "$work/sparse" none
release "$work/sparse/releases/app/1.0" "1.0"
truncate -s 4G "$work/sparse/releases/app/1.0/sparse.raw"

mapfile -t cold_files < <(find "$work/cold/releases/" -type f ! -name release.toml | sort)
mapfile -t huge_files < <(find "$work/huge/releases/" -type f ! -name release.toml | sort)
# Two halves of equal size for the two openssl processes.
half_a=(); half_b=()
for f in "${cold_files[@]}"; do
  case "$f" in *big-[1234].raw|*/1.[1234]/small-*) half_a+=("$f") ;; *) half_b+=("$f") ;; esac
done

# Warm the page cache once, so every case reads from memory.
cat "${cold_files[@]}" "${huge_files[@]}" >/dev/null
find "$work/warm/releases" -type f -exec cat {} + >/dev/null

now() { date +%s%N; }
declare -A times
record() { times[$1]+="$2 "; }
timed() { # timed NAME CMD...
  local t0 t1; t0=$(now)
  if ! "${@:2}" >/dev/null 2>"$work/stderr"; then
    echo "bench: case $1 failed:" >&2; cat "$work/stderr" >&2; exit 1
  fi
  t1=$(now)
  record "$1" $(((t1 - t0) / 1000))
}
build() { "$bin" build --quiet --config "$1/vmcast.toml" --out "$1/public" "${@:2}"; }
openssl2() {
  openssl dgst -sha256 "${half_a[@]}" >/dev/null & local p=$!
  openssl dgst -sha256 "${half_b[@]}" >/dev/null
  wait "$p"
}

build "$work/warm" --cache-dir "$work/cache" # prime the warm cache
for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  timed sha256sum sha256sum "${cold_files[@]}"
  timed openssl2 openssl2
  timed cold build "$work/cold" --no-cache
  timed copy build "$work/copy" --no-cache
  timed warm1000 build "$work/warm" --cache-dir "$work/cache"
  timed cold1000 build "$work/warm" --no-cache
  timed openssl1_huge openssl dgst -sha256 "${huge_files[@]}"
  timed huge build "$work/huge" --no-cache
done

median() { tr ' ' '\n' <<<"${times[$1]}" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v u="$(median "$1")" 'BEGIN {printf "%.0f", u/1000}'; }
ratio() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN {printf "%.3f", a/b}'; }

rss=$( { /usr/bin/time -v "$bin" build --quiet --no-cache --config "$work/sparse/vmcast.toml" --out "$work/sparse/public"; } 2>&1 \
  | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
bytes=$(du -cb "${cold_files[@]}" | tail -n 1 | cut -f1)
gbps=$(awk -v b="$bytes" -v u="$(median cold)" 'BEGIN {printf "%.2f", b/(u*1000)}')

cat <<EOF

vmcast-gen hashing benchmark: $(nproc) cores, $rounds rounds, medians (ms), $(date -u +%Y-%m-%d)
cold tree: $((bytes >> 20)) MiB in ${#cold_files[@]} files; vmcast-gen cold: $gbps GB/s

| case | vmcast-gen | baseline | baseline ms | ratio | target |
|---|---:|---|---:|---:|---|
| cold build | $(ms cold) | 2 x openssl dgst -sha256 | $(ms openssl2) | $(ratio cold openssl2) | <= 1.15 |
| cold build | $(ms cold) | 1 x sha256sum | $(ms sha256sum) | $(ratio sha256sum cold) (speed-up) | ~3.5 |
| warm rebuild, 1,000 images | $(ms warm1000) | cold build of the same tree | $(ms cold1000) | $(ratio warm1000 cold1000) | < 0.05 |
| one 2 GiB image + 7 small | $(ms huge) | 1 x openssl dgst -sha256 | $(ms openssl1_huge) | $(ratio huge openssl1_huge) | ~1 (one SHA-256 stream is serial) |
| image_mode = copy | $(ms copy) | image_mode = none | $(ms cold) | $(ratio copy cold) | copy written from the hashing read |
| peak RSS, 4 GiB sparse image | $((rss / 1024)) MiB | | | | < 64 MiB |
EOF

#!/usr/bin/env bash
# Delta downloads: what `pull` transfers with an older image at hand, against
# what changed, and what the zsync control files cost the build.
#
# Two pairs of images, each an older and a newer release of one appliance:
#   raw   two 1 GiB raw images of random bytes, 2 % of the newer one's 4 KiB
#         blocks rewritten at places picked at random;
#   ext4  two 512 MiB ext4 file systems made with `mkfs.ext4 -d` from trees of
#         about 300 MiB of files that differ in a few files (three rewritten,
#         one added, one removed), with a fixed UUID, hash seed and clock.
# The site is built with zsync on and served by nginx (a config of the bench's
# own, on 127.0.0.1); `vmcast-gen pull --seed <older image>` fetches each
# newer image, and nginx's log says how many bytes it sent. "Changed" is the
# bytes of the newer image's 4 KiB blocks (the control file's) whose content
# is nowhere in the older one: for the raw pair the blocks rewritten; for the
# ext4 pair, data mkfs placed elsewhere is found, so is not counted. The
# stock `zsync -i <older> <url>.zsync` runs against the same server, and so
# does a pull against nginx answering one range a request (`max_ranges 1`).
# The cold build is timed against a baseline measured in the same run, rounds
# interleaved: the same four images split over two parallel
# `openssl dgst -sha256`. Each sum's share of the build's hashing is measured
# alone on one core, in the thread's CPU time (`cargo bench --bench zsync_sums`), and the control file
# and its sums against the zsync-rs crate's (bench/zsync-rs, a package of its
# own). Prints Markdown tables of medians.
#
#   bench/delta.sh [ROUNDS]    (default 5; needs ~6 GiB free under $TMPDIR,
#                               nginx, zsync, mkfs.ext4, openssl, python3)
set -euo pipefail
rounds=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/vmcast-gen"
key="$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.key"
pub="$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.pub"
nginx=$(command -v nginx || echo /usr/sbin/nginx)
mkfs=$(command -v mkfs.ext4 || echo /usr/sbin/mkfs.ext4)

for tool in openssl python3 zsync "$nginx" "$mkfs"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-bench-delta.XXXXXX")
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Fast deterministic pseudo-random bytes: AES-CTR keystream.
fill() { # fill FILE SIZE SEED
  # openssl dies of SIGPIPE when head has enough; that is the plan.
  { openssl enc -aes-128-ctr -nosalt -pass "pass:$3" -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c "$2" >"$1"
}

release() { # release APPLIANCE VERSION DAY
  local dir="$work/releases/$1/$2"
  mkdir -p "$dir"
  printf 'version = "%s"\ndate = 2026-01-%02d\nnotes = "bench"\n' "$2" "$3" >"$dir/release.toml"
  echo "$dir"
}

echo "bench: making the images in $work" >&2
old_raw="$(release raw 1.0 1)/raw-1.0.raw"
new_raw="$(release raw 1.1 2)/raw-1.1.raw"
fill "$old_raw" $((1 << 30)) raw
cp "$old_raw" "$new_raw"
python3 - "$new_raw" <<'EOF'
import os, random, sys
random.seed(2)
block = 4096
with open(sys.argv[1], "r+b") as f:
    blocks = os.fstat(f.fileno()).st_size // block
    for b in random.sample(range(blocks), blocks * 2 // 100):
        f.seek(b * block)
        f.write(random.randbytes(block))
EOF

# Two trees of files, then two file systems made from them as a build
# system would: same UUID, hash seed and time, so only the files differ.
tree() { # tree DIR
  mkdir -p "$1"
  for d in 1 2 3 4 5 6; do
    mkdir -p "$1/usr/lib/d$d"
    for f in $(seq 1 25); do fill "$1/usr/lib/d$d/f$f.so" $(((f * 97 % 31 + 1) << 16)) "t$d.$f"; done
  done
}
tree "$work/tree-old"
cp -a "$work/tree-old" "$work/tree-new"
fill "$work/tree-new/usr/lib/d2/f3.so" $((2 << 20)) changed-a
fill "$work/tree-new/usr/lib/d4/f17.so" $((1 << 20)) changed-b
fill "$work/tree-new/usr/lib/d5/f8.so" $((3 << 20)) changed-c
fill "$work/tree-new/usr/lib/d1/new.so" $((1 << 20)) added
rm "$work/tree-new/usr/lib/d6/f11.so"
mkext4() { # mkext4 TREE IMAGE
  E2FSPROGS_FAKE_TIME=1767225600 "$mkfs" -q -F -t ext4 -b 4096 -d "$1" \
    -U 6a0f2a0e-4c1a-4e65-9d1e-2a4c1b7e0d11 -E hash_seed=4f1b6c9e-0d1c-4a4e-8f5e-7b2d9c3a1e22,root_owner=0:0 \
    "$2" 512M >/dev/null
}
old_ext4="$(release ext4 1.0 1)/ext4-1.0.img"
new_ext4="$(release ext4 1.1 2)/ext4-1.1.img"
mkext4 "$work/tree-old" "$old_ext4"
mkext4 "$work/tree-new" "$new_ext4"

cat >"$work/vmcast.toml" <<EOF
title = "bench"
description = "bench"
base_url = "http://127.0.0.1:PORT/"
secret_key = "$key"
image_mode = "link"
EOF
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/PORT/$port/" "$work/vmcast.toml"
sed 's/^image_mode = .*/&\nzsync = false/' "$work/vmcast.toml" >"$work/plain.toml"
load=$(cut -d ' ' -f 1-3 /proc/loadavg)
files=("$old_raw" "$new_raw" "$old_ext4" "$new_ext4")
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
build() { # build CONFIG OUT ARGS...
  "$bin" build --config "$work/$1.toml" --out "$work/$2" "${@:3}"
}
openssl2() {
  openssl dgst -sha256 "$old_raw" "$old_ext4" >/dev/null & local p=$!
  openssl dgst -sha256 "$new_raw" "$new_ext4" >/dev/null
  wait "$p"
}
for r in $(seq 1 "$rounds"); do
  echo "bench: build round $r/$rounds" >&2
  # Odd rounds start with the baseline, even ones with the build.
  [ $((r % 2)) = 1 ] && timed openssl2 openssl2
  timed cold build vmcast public --no-cache
  [ $((r % 2)) = 0 ] && timed openssl2 openssl2
  timed nozsync build plain public-plain --no-cache
done

# The site as published, served by nginx: many ranges to a request, and one.
serve() { # serve [MAX_RANGES]
  [ -n "$nginx_pid" ] && { kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true; }
  mkdir -p "$work/nginx/temp"
  : >"$work/nginx/access.log"
  cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  log_format sent '\$request \$status \$body_bytes_sent';
  access_log $work/nginx/access.log sent;
  client_body_temp_path $work/nginx/temp/body;
  proxy_temp_path $work/nginx/temp/proxy;
  fastcgi_temp_path $work/nginx/temp/fastcgi;
  uwsgi_temp_path $work/nginx/temp/uwsgi;
  scgi_temp_path $work/nginx/temp/scgi;
  types { }
  default_type application/octet-stream;
  ${1:+max_ranges $1;}
  server { listen 127.0.0.1:$port; root $work/public; }
}
EOF
  "$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
  nginx_pid=$!
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && return
    sleep 0.05
  done
  echo "bench: nginx did not start" >&2; exit 1
}
sent() { # sent PATH-PART: body bytes nginx sent for it since the log was emptied
  awk -v p="$1" 'index($0, p) {s += $NF} END {print s + 0}' "$work/nginx/access.log"
}
changed() { # changed OLD NEW: bytes of the new image's 4 KiB blocks found nowhere in the old one
  python3 - "$1" "$2" <<'EOF'
import hashlib, sys
def blocks(path):
    with open(path, "rb") as f:
        while block := f.read(4096):
            yield block
old = {hashlib.sha256(b).digest() for b in blocks(sys.argv[1])}
print(sum(len(b) for b in blocks(sys.argv[2]) if hashlib.sha256(b).digest() not in old))
EOF
}
image_in() { find "$1" -maxdepth 1 -type f \( -name '*.raw' -o -name '*.img' \) | head -n 1; }
declare -A result
pull() { # pull APPLIANCE SEED CASE
  local dest="$work/dest-$3"
  rm -rf "$dest"
  : >"$work/nginx/access.log"
  local t0 t1; t0=$(now)
  "$bin" pull "http://127.0.0.1:$port/" --pubkey "$pub" --appliance "$1" --dest "$dest" \
    --arch x86_64 --seed "$2" --json >"$work/pull-$3.json" 2>"$work/pull-$3.err" \
    || { echo "bench: pull $3 failed:" >&2; cat "$work/pull-$3.err" >&2; exit 1; }
  t1=$(now)
  result[$3]="$(sent "/images/$1/") $(((t1 - t0) / 1000000))"
}
stock() { # stock APPLIANCE VERSION OLD CASE
  local dir="$work/zsync-$4"
  rm -rf "$dir"; mkdir -p "$dir"
  : >"$work/nginx/access.log"
  local name; name=$(basename "$(image_in "$work/releases/$1/$2")")
  local t0 t1; t0=$(now)
  (cd "$dir" && timeout 600 zsync -q -i "$3" -o out \
    "http://127.0.0.1:$port/images/$1/$2/$name.zsync") \
    || { echo "bench: zsync $4 failed" >&2; exit 1; }
  t1=$(now)
  cmp -s "$dir/out" "$work/releases/$1/$2/$name" || { echo "bench: zsync $4 rebuilt other bytes" >&2; exit 1; }
  result[$4]="$(sent "/images/$1/") $(((t1 - t0) / 1000000))"
}
echo "bench: pulls" >&2
serve
pull raw "$old_raw" raw
pull ext4 "$old_ext4" ext4
stock raw 1.1 "$old_raw" raw-zsync
stock ext4 1.1 "$old_ext4" ext4-zsync
serve 1
pull raw "$old_raw" raw-single
pull ext4 "$old_ext4" ext4-single
for c in raw ext4 raw-single ext4-single; do
  dest_image=$(image_in "$work/dest-$c")
  app=${c%%-*}
  cmp -s "$dest_image" "$work/releases/$app/1.1/$(basename "$dest_image")" \
    || { echo "bench: pull $c placed other bytes" >&2; exit 1; }
done

median() { tr ' ' '\n' <<<"${times[$1]}" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v u="$(median "$1")" 'BEGIN {printf "%.0f", u/1000}'; }
ratio() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN {printf "%.2f", a/b}'; }
paired() {
  paste <(tr ' ' '\n' <<<"${times[$1]}" | grep .) <(tr ' ' '\n' <<<"${times[$2]}" | grep .) \
    | awk '{print $1/$2}' | sort -g \
    | awk '{a[NR]=$1} END {printf "%.2f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
all() { tr ' ' '\n' <<<"${times[$1]}" | grep . | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1/1000}'; }
row() { # row LABEL CASE APPLIANCE IMAGE OLD
  local control changed_bytes sent ms
  control=$(stat -c %s "$work/public/images/$3/1.1/$(basename "$4").zsync")
  changed_bytes=$(changed "$5" "$4")
  read -r sent ms <<<"${result[$2]}"
  awk -v l="$1" -v s="$sent" -v c="$changed_bytes" -v z="$control" -v ms="$ms" -v n="$(stat -c %s "$4")" 'BEGIN {
    printf "| %s | %d | %d | %d (%.2f %%) | %d | %.3f | %s | %d |\n", l, n, c, z, 100 * z / n, s, (s - z) / c, ((s - z) <= 1.15 * c ? "yes" : "NO"), ms
  }'
}

cat <<EOF

vmcast-gen delta benchmark: $(nproc) cores, $rounds build rounds, medians, $(date -u +%Y-%m-%d), load average before the builds: $load, after the pulls: $(cut -d " " -f 1-3 /proc/loadavg)

| image, client (server) | image bytes | changed bytes | control file | bytes sent | (sent - control) / changed | <= 1.15 | ms |
|---|---:|---:|---:|---:|---:|---|---:|
EOF
row "raw 1 GiB, 2 % of blocks, pull (nginx)" raw raw "$new_raw" "$old_raw"
row "raw 1 GiB, pull (nginx, max_ranges 1)" raw-single raw "$new_raw" "$old_raw"
row "raw 1 GiB, stock zsync 0.6.2 (nginx)" raw-zsync raw "$new_raw" "$old_raw"
row "ext4 512 MiB, 5 files, pull (nginx)" ext4 ext4 "$new_ext4" "$old_ext4"
row "ext4 512 MiB, pull (nginx, max_ranges 1)" ext4-single ext4 "$new_ext4" "$old_ext4"
row "ext4 512 MiB, stock zsync 0.6.2 (nginx)" ext4-zsync ext4 "$new_ext4" "$old_ext4"

cat <<EOF

| cold build of the 4 images (3 GiB) | ms (median) | each round, in order | ratio of medians | median of per-round ratios | target |
|---|---:|---|---:|---:|---|
| baseline: 2 parallel openssl dgst -sha256 | $(ms openssl2) | $(all openssl2) | 1 | 1 | |
| zsync = true (default) | $(ms cold) | $(all cold) | $(ratio cold openssl2) | $(paired cold openssl2) | <= 1.6 |
| zsync = false (SHA-256 only) | $(ms nozsync) | $(all nozsync) | $(ratio nozsync openssl2) | $(paired nozsync openssl2) | |
EOF

echo "bench: the sums alone" >&2
(cd "$repo" && cargo bench --quiet --bench zsync_sums -- "$rounds" 2>/dev/null) >"$work/sums"
awk '{rate[$1] = $2}
  END {
    read = 1 / rate["sha256+sha1"] + 1 / rate["md4+rsum"]
    print "\n| sum (one core, alone) | MB/s | share of the hashing read | time / SHA-256 alone |"
    print "|---|---:|---:|---:|"
    printf "| SHA-256 alone (every image; zsync = false) | %.0f | | 1 |\n", rate["sha256"]
    printf "| SHA-1 alone (for comparison) | %.0f | | %.2f |\n", rate["sha1"], rate["sha256"] / rate["sha1"]
    printf "| SHA-256 + SHA-1, one pass (every image; the SHA-1 for the control file) | %.0f | %.0f %% | %.2f |\n", rate["sha256+sha1"], 100 / rate["sha256+sha1"] / read, rate["sha256"] / rate["sha256+sha1"]
    printf "| MD4 + rolling sum of each 4 KiB block, 16 at a time (control file) | %.0f | %.0f %% | %.2f |\n", rate["md4+rsum"], 100 / rate["md4+rsum"] / read, rate["sha256"] / rate["md4+rsum"]
    printf "| the hashing read with zsync = true | %.0f | 100 %% | %.2f |\n", 1 / read, rate["sha256"] * read
  }' "$work/sums"

echo "bench: against zsync-rs" >&2
# The same versions of the shared crates as the release build, in its target
# directory: only what zsync-rs changes is built again.
cp "$repo/Cargo.lock" "$repo/bench/zsync-rs/Cargo.lock"
echo
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" \
  cargo run --quiet --release --manifest-path "$repo/bench/zsync-rs/Cargo.toml" -- "$rounds"

#!/usr/bin/env bash
# What a build costs, and what one new release changes, on a site of
# 10,000 releases.
#
#   bench/churn.sh [ROUNDS]     (default 5; needs ~0.5 GiB free under $TMPDIR)
#
# The site: 4 appliances x 2,500 releases a day apart, each with notes of a
# few Markdown lines and one 4 KiB image, image_mode = "link", the default
# feed_items = 20: 992 archives. Each round builds it cold (no output, no
# hash cache), then twice with nothing changed: the first rebuild has no
# spare site yet, the second (the warm rebuild) stages in the spare as
# every later build does. Then it adds ten releases of one appliance, a
# day apart, and builds after each; the tenth fills an archive. Every
# output tree is compared with the one before, file by file and byte for
# byte: what one new release adds, changes and removes. Prints the medians
# of wall and CPU (user + system) time in ms, and their ratios to the
# cold build's, as Markdown tables, then the files the first and the tenth
# new release changed.
#
# In the first round the site is also published to moto's S3 server
# (python3 -m moto.server) after the warm rebuild, and again after the
# first and the tenth new release: what `publish` uploads must be exactly
# what changed since the last publish, or the script fails. PUBLISH=0
# skips this; it takes a few minutes (publish asks the server about every
# one of the 12,000 files, one at a time).
#
# VMCAST_GEN=/path/to/vmcast-gen measures that binary instead of building
# this checkout's: one run on one machine can compare two versions.
# PER_APP=N makes a smaller (or larger) site, N releases per appliance.
#
# AB_WITH=/path/to/other/vmcast-gen compares warm rebuilds of two binaries
# instead (A: this checkout's or VMCAST_GEN, B: AB_WITH). There are two
# sites (outputs and caches) of the one tree, and two sites alone differ
# by some 10 ms: each binary builds one site for the first half of the
# turns and the other for the second. Before each half each binary builds
# its site three times (a program new to a site forgets what that site's
# memos hold), the directories settle, and each builds once more; then the
# two take turns, AB_ROUNDS times each in all (default 20), in the order
# A B B A A B ..., so that neither always runs right after the other's
# writeback. Prints the medians and their ratio, and each binary's median
# on each site, and exits.
set -euo pipefail
rounds=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n ${VMCAST_GEN:-} ]]; then
  bin=$VMCAST_GEN
else
  (cd "$repo" && cargo build --release --quiet)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/vmcast-gen"
fi
apps=4 per_app=${PER_APP:-2500} new=10
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-bench-churn.XXXXXX")
moto_pid=
cleanup() {
  if [[ -n $moto_pid ]]; then kill "$moto_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
install -m 600 "$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.key" "$work/bench.key"

# release DIR APP N: release.toml and a 4 KiB image, dated 2000-01-01 + N days.
# An image starts with a line of text: random bytes that began with a
# compressor's magic (1f 8b is gzip) would be taken for a broken archive.
echo "bench: making $((apps * per_app)) releases in $work" >&2
python3 - "$work/releases" "$apps" "$per_app" <<'PY'
import datetime, os, sys
root, apps, per_app = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = datetime.date(2000, 1, 1)
for n in range(per_app):
    for a in range(1, apps + 1):
        app, version = f"app{a}", f"1.{n}.0"
        d = os.path.join(root, app, version)
        os.makedirs(d)
        date = start + datetime.timedelta(days=n)
        with open(os.path.join(d, "release.toml"), "w") as f:
            f.write(f'version = "{version}"\ndate = {date}\nnotes = """\n'
                    f'Release {n} of **{app}**:\n\n- fixes `bug-{n}`\n'
                    f'- see [the changelog](https://example.com/{app}/{version})\n"""\n')
        with open(os.path.join(d, f"{app}-{version}.raw"), "wb") as f:
            f.write(b"vmcast-bench\n" + os.urandom(4083))
PY
# The images are world-readable, so link mode links them.
chmod -R a+rX "$work/releases"
add_release() { # add_release K: the Kth new release of app1, K days after its newest
  local n=$((per_app - 1 + $1)) dir
  dir="$work/releases/app1/1.$n.0"
  mkdir -p "$dir"
  printf 'version = "1.%s.0"\ndate = %s\nnotes = "New release %s."\n' "$n" \
    "$(date -u -d "2000-01-01 + $n days" +%F)" "$1" >"$dir/release.toml"
  { printf 'vmcast-bench\n'; head -c 4083 /dev/urandom; } >"$dir/app1-1.$n.0.raw"
  chmod -R a+rX "$dir"
}
cat >"$work/vmcast.toml" <<EOF
title = "bench"
description = "bench"
base_url = "https://bench.example.com/"
secret_key = "$work/bench.key"
releases_dir = "releases"
image_mode = "link"
EOF
out="$work/public"
cache="$work/cache"

build() {
  "$bin" build --quiet -c "$work/vmcast.toml" --out "$out" --cache-dir "$cache" \
    >/dev/null 2>"$work/stderr"
}
declare -A wall cpu
TIMEFORMAT='%3R %3U %3S'
timed() { # timed NAME...: one build, its wall and CPU time kept under each NAME
  local t real user sys name
  if ! t=$({ time build; } 2>&1); then
    echo "bench: the build failed:" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
  read -r real user sys <<<"$t"
  for name in "$@"; do
    wall[$name]+="$(awk -v r="$real" 'BEGIN {printf "%d", r * 1000}') "
    cpu[$name]+="$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%d", (u + s) * 1000}') "
  done
}
# Every published file with its SHA-256 (the marker is not published).
snapshot() { # snapshot FILE
  (cd "$out" && find . -type f ! -name .vmcast-gen -printf '%P\0' | sort -z |
    xargs -0 sha256sum) >"$1"
}
# What changed from one snapshot to the next: "added PATH", "changed PATH",
# "removed PATH", sorted.
changes() { # changes BEFORE AFTER
  python3 - "$1" "$2" <<'PY'
import sys
def load(path):
    with open(path) as f:
        return dict(reversed(line.rstrip("\n").split("  ", 1)) for line in f)
before, after = load(sys.argv[1]), load(sys.argv[2])
for path in sorted(before.keys() | after.keys()):
    if path not in before:
        print("added", path)
    elif path not in after:
        print("removed", path)
    elif before[path] != after[path]:
        print("changed", path)
PY
}

# moto's S3 server, and a publish of the site that must upload exactly the
# files added or changed since the last one (CHANGES).
start_moto() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m moto.server -H 127.0.0.1 -p "$port" >/dev/null 2>"$work/moto.log" &
  moto_pid=$!
  for _ in $(seq 100); do
    curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null && break
    sleep 0.2
  done
  endpoint="http://127.0.0.1:$port"
}
publish() { # publish CHANGES: uploads, and checks them against CHANGES if given
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true "$bin" publish --json -c "$work/vmcast.toml" -o "$out" \
    s3://bench/site --endpoint-url "$endpoint" >"$work/publish.json"
  [[ -n ${1:-} ]] || return 0
  python3 - "$work/publish.json" "$1" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
uploaded = sorted(s["path"] for s in report["steps"] if s["action"] == "upload")
changed = sorted(line.split(" ", 1)[1].strip() for line in open(sys.argv[2])
                 if not line.startswith("removed "))
if uploaded != changed:
    sys.exit(f"bench: publish uploaded {uploaded}, but what changed is {changed}")
print(f"bench: publish uploaded exactly the {len(uploaded)} file(s) that changed", file=sys.stderr)
PY
}

# The share of the last minute some task waited for a CPU (Linux's
# pressure stall information), where the kernel reports it: on a shared
# machine, what told a quiet minute from a noisy one.
pressure() { awk '/^some/ {sub("avg60=", "", $3); printf ", CPU pressure %s %%", $3}' /proc/pressure/cpu 2>/dev/null || true; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }

if [[ -n ${AB_WITH:-} ]]; then
  ab_rounds=${AB_ROUNDS:-20}
  declare -A bins=([a]="$bin" [b]="$AB_WITH") site
  use() { # use a|b: that binary, on the output and cache of its site now
    bin=${bins[$1]} out="$work/public-${site[$1]}" cache="$work/cache-${site[$1]}"
  }
  for half in 1 2; do
    if ((half == 1)); then
      site=([a]=1 [b]=2) turns=$(((ab_rounds + 1) / 2))
    else
      site=([a]=2 [b]=1) turns=$((ab_rounds / 2))
    fi
    for s in a b; do
      use "$s"
      for _ in 1 2 3; do timed "ready-$s"; done
    done
    # Directories changed less than listing::SETTLED (3 s) ago are listed.
    sleep 3.5
    for s in a b; do
      use "$s"
      timed "ready-$s"
    done
    for i in $(seq 1 "$turns"); do
      if ((i % 2)); then order="a b"; else order="b a"; fi
      for s in $order; do
        use "$s"
        timed "$s" "$s-${site[$s]}"
      done
    done
  done
  wa=$(median "${wall[a]}") wb=$(median "${wall[b]}")
  ca=$(median "${cpu[a]}") cb=$(median "${cpu[b]}")
  cat <<EOF

vmcast-gen warm rebuilds, A against B: $((apps * per_app)) releases ($apps appliances), $(nproc) cores, $ab_rounds each, turn about (ABBA), medians (ms), $(date -u +%Y-%m-%d), load average $(cut -d' ' -f1-3 /proc/loadavg)$(pressure)

A: ${bins[a]}
B: ${bins[b]}

| binary | wall | CPU (user+sys) |
|---|---:|---:|
| A | $wa | $ca |
| B | $wb | $cb |
| B/A | $(ratio "$wb" "$wa") | $(ratio "$cb" "$ca") |

Wall, each binary on each site (what the sites alone make of it):

| binary | site 1 | site 2 |
|---|---:|---:|
| A | $(median "${wall[a-1]}") | $(median "${wall[a-2]}") |
| B | $(median "${wall[b-1]}") | $(median "${wall[b-2]}") |
EOF
  exit 0
fi

publishing=${PUBLISH:-1}
for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  rm -rf "$out" "$work/.public.spare" "$cache"
  sync
  timed cold
  timed first
  timed warm
  snapshot "$work/before"
  if [[ $r == 1 && $publishing == 1 ]]; then
    echo "bench: publishing the whole site to moto" >&2
    start_moto
    publish
    cp "$work/before" "$work/published"
  fi
  for k in $(seq 1 "$new"); do
    add_release "$k"
    timed new
    snapshot "$work/after"
    changes "$work/before" "$work/after" >"$work/changes-$r-$k"
    mv "$work/after" "$work/before"
    if [[ $r == 1 && $publishing == 1 && ($k == 1 || $k == "$new") ]]; then
      changes "$work/published" "$work/before" >"$work/since-publish"
      publish "$work/since-publish"
      cp "$work/before" "$work/published"
    fi
  done
  for k in $(seq 1 "$new"); do rm -rf "$work/releases/app1/1.$((per_app - 1 + k)).0"; done
done

cold_wall=$(median "${wall[cold]}") cold_cpu=$(median "${cpu[cold]}")
cat <<EOF

vmcast-gen churn benchmark: $((apps * per_app)) releases ($apps appliances), $(nproc) cores, $rounds rounds, medians (ms), $(date -u +%Y-%m-%d), load average $(cut -d' ' -f1-3 /proc/loadavg)$(pressure)

| build | wall | wall/cold | CPU (user+sys) | CPU/cold |
|---|---:|---:|---:|---:|
EOF
for case in cold first warm new; do
  case $case in
    cold) label="cold build (no output, no cache)" ;;
    first) label="first rebuild, nothing changed (no spare yet)" ;;
    warm) label="warm rebuild, nothing changed" ;;
    new) label="one new release (each of $new in a row)" ;;
  esac
  w=$(median "${wall[$case]}") c=$(median "${cpu[$case]}")
  echo "| $label | $w | $(ratio "$w" "$cold_wall") | $c | $(ratio "$c" "$cold_cpu") |"
done

count() { grep -c "^$1 " "$2" || true; }
echo
echo "| new release (round 1) | added | changed | removed | files changed |"
echo "|---|---:|---:|---:|---:|"
for k in $(seq 1 "$new"); do
  f="$work/changes-1-$k"
  echo "| $k | $(count added "$f") | $(count changed "$f") | $(count removed "$f") | $(wc -l <"$f") |"
done
for r in $(seq 2 "$rounds"); do
  for k in $(seq 1 "$new"); do
    # The same release changes the same files in every round.
    if ! cmp -s "$work/changes-1-$k" "$work/changes-$r-$k"; then
      echo "bench: new release $k changed other files in round $r than in round 1" >&2
    fi
  done
done
for k in 1 "$new"; do
  echo
  echo "Files new release $k changed:"
  echo
  sed 's/^/    /' "$work/changes-1-$k"
done

#!/usr/bin/env bash
# A fleet polls one site. HOSTS hosts, each current with the site, run
# `vmcast-gen pull` once against each of three servers: `vmcast-gen serve`,
# Python's http.server and moto's S3 server. A counting proxy between them
# (bench/count-proxy.py) logs every response's status and body length, so
# requests and bytes per poll are what the server sent, not what the client
# says. For contrast, the first poll of one host, which is not current yet.
#
#   bench/fleet.sh [HOSTS] [PARALLEL]     (default 1000 hosts, 4 at a time)
#
# The site is the example site (two appliances, four releases, every
# catalog); each host follows webapp. Prints a Markdown table.
set -euo pipefail
hosts=${1:-1000}
parallel=${2:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/vmcast-gen"
(cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmcast-bench-fleet.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # wait_port PORT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}
proxy() { # proxy LISTEN UPSTREAM LOG
  python3 "$repo/bench/count-proxy.py" "$1" "$2" "$3" &
  pids+=($!)
  wait_port "$1"
}
# The example site, built for BASE into DIR, with its test-only key.
build_for() { # build_for BASE DIR
  sed -e "s|^base_url = .*|base_url = \"$1\"|" \
    -e "s|^output_dir = .*|output_dir = \"$2\"|" \
    -e "s|example-site/|$repo/example-site/|g" "$repo/vmcast.toml" >"$work/vmcast.toml"
  SOURCE_DATE_EPOCH=1790000000 "$bin" build -c "$work/vmcast.toml" --quiet --no-cache 2>/dev/null
}
# One host, current with the site at BASE, then HOSTS copies of it.
fleet() { # fleet NAME BASE PUBKEY
  local first="$work/$1/first"
  "$bin" pull "$2" --pubkey "$3" --appliance webapp --dest "$first" --arch x86_64 \
    >/dev/null 2>&1 || {
    echo "$1: the first pull failed:" >&2
    "$bin" pull "$2" --pubkey "$3" --appliance webapp --dest "$first" --arch x86_64 >&2
    return 1
  }
  for i in $(seq "$hosts"); do cp -a "$first" "$work/$1/host-$i"; done
}
# Every host polls once; prints requests, body bytes and 304s per poll.
poll() { # poll NAME BASE PUBKEY LOG
  : >"$4"
  seq "$hosts" | xargs -P "$parallel" -I{} sh -c \
    '"$0" pull "$1" --pubkey "$2" --appliance webapp --dest "$3/host-{}" --arch x86_64 >/dev/null; test $? -eq 3' \
    "$bin" "$2" "$3" "$work/$1" || { echo "$1: a host was not current" >&2; return 1; }
  awk -v n="$hosts" -v name="$1" '
    { requests++; bytes += $2; if ($1 == 304) unmodified++ }
    END { printf "| %s | %d | %.2f | %.1f | %d of %d |\n", name, n, requests / n, bytes / n, unmodified, requests }' "$4"
}
first_poll() { # first_poll NAME BASE PUBKEY LOG
  : >"$4"
  "$bin" pull "$2" --pubkey "$3" --appliance webapp --dest "$work/$1/cold" --arch x86_64 \
    >/dev/null
  awk -v name="$1" '{ requests++; bytes += $2 }
    END { printf "| %s, a host that is not current | 1 | %d | %d | - |\n", name, requests, bytes }' "$4"
}

rows=()

# vmcast-gen serve, behind the proxy: built for the proxy's URL.
front=$(free_port) back=$(free_port)
base="http://127.0.0.1:$front/"
(cd "$repo" && exec "$bin" serve --port "$back" --base-url "$base" >"$work/serve.log" 2>&1) &
pids+=($!)
wait_port "$back"
proxy "$front" "$back" "$work/serve.count"
curl -fsS -o "$work/serve.pub" "${base}vmcast.pub"
fleet serve "$base" "$work/serve.pub"
rows+=("$(poll serve "$base" "$work/serve.pub" "$work/serve.count")")
rows+=("$(first_poll serve "$base" "$work/serve.pub" "$work/serve.count")")

# Python's http.server (Last-Modified and If-Modified-Since, no ETag).
front=$(free_port) back=$(free_port)
base="http://127.0.0.1:$front/"
build_for "$base" "$work/py-site"
python3 -m http.server "$back" --bind 127.0.0.1 -d "$work/py-site" >/dev/null 2>&1 &
pids+=($!)
wait_port "$back"
proxy "$front" "$back" "$work/py.count"
pub="$repo/example-site/keys/TEST-ONLY-DO-NOT-USE.pub"
fleet http.server "$base" "$pub"
rows+=("$(poll http.server "$base" "$pub" "$work/py.count")")
rows+=("$(first_poll http.server "$base" "$pub" "$work/py.count")")

# moto's S3 server: the site published with `vmcast-gen publish`.
front=$(free_port) back=$(free_port)
bucket=fleet-bench
base="http://127.0.0.1:$front/$bucket/site/"
python3 -m moto.server -H 127.0.0.1 -p "$back" >/dev/null 2>&1 &
pids+=($!)
wait_port "$back"
python3 - "$back" "$bucket" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
c.request("PUT", "/" + sys.argv[2], headers={"Content-Length": "0"})
assert c.getresponse().status == 200, "cannot create the bucket"
PY
build_for "$base" "$work/s3-site"
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
  "$bin" publish --out "$work/s3-site" "s3://$bucket/site" --endpoint-url "http://127.0.0.1:$back" \
  --acl public-read >/dev/null
proxy "$front" "$back" "$work/s3.count"
fleet S3 "$base" "$pub"
rows+=("$(poll S3 "$base" "$pub" "$work/s3.count")")
rows+=("$(first_poll S3 "$base" "$pub" "$work/s3.count")")

echo "| server | polls | requests per poll | body bytes per poll | answered 304 |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"

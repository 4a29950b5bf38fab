#!/usr/bin/env bash
# bench_gateway.sh — the issue's playlist benchmark through the whole stack:
# playlist writes per second (add one track, POST /v1/playlists/{id}/items)
# and reads of a page of a 10,000-item playlist
# (GET /v1/playlists/{id}/items?offset=N&limit=100), HTTP -> gateway ->
# broker -> musicbus-playlists, with wrk.
#
#   tests/playlists/bench_gateway.sh [--bin DIR] [--workers N] [--duration SEC]
#                                    [--connections N] [--playlists N]
#
# Under a temp dir it starts a broker, one catalog worker, N playlists
# workers (--workers, default 1, sharing one data dir) and one gateway
# (its routes built in from schemas/openapi.json). It
# signs its own token (HS256 with a secret of its own, roles user+admin),
# creates an artist, an album and 100 tracks through the catalog (whose
# events reach the playlists actor over the bus), and --playlists (default
# 12) playlists of 9,000 items each. Then, each after a 2 s warm-up:
#   writes: wrk adds one random track to a random playlist per request
#           (the playlists grow towards 10,000; 12 x 1,000 slots is enough
#           for ~2,000 writes/s over 5 s);
#   reads:  wrk reads 100 items at a random offset of a 10,000-item playlist.
# Every process binds 127.0.0.1 on a port the OS picks and is stopped on
# exit. A run with non-2xx answers is reported as not valid.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin_dir=$root/build/bin
workers=1
duration=5
connections=16
n_playlists=12
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin_dir=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --playlists) n_playlists=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in wrk curl jq openssl python3; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
for prog in musicbus-broker musicbus-catalog musicbus-playlists musicbus-gateway; do
  [ -x "$bin_dir/$prog" ] || { echo "no $bin_dir/$prog (--bin DIR)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/bench_playlists_gw.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
die() { echo "bench_gateway: $*" >&2; exit 1; }
export MUSICBUS_LOG_LEVEL=${MUSICBUS_LOG_LEVEL:-warn}

wait_ready() { # FILE PID NAME
  for _ in $(seq 200); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited at start (see its log)"
    sleep 0.05
  done
  die "$3 wrote no ready file"
}

secret=$(head -c 48 /dev/urandom | base64 -w0)
(umask 077 && printf '%s' "$secret" >"$tmp/jwt.secret")
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
jwt_head=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
jwt_body=$(printf '{"iss":"musicbus","aud":"musicbus-api","sub":"benchUser0000000000000","iat":%d,"exp":%d,"jti":"benchToken000000000000","sid":"benchSession0000000000","tier":"premium","roles":["user","admin"]}' \
  "$now" $((now + 3600)) | b64url)
jwt_sig=$(printf '%s' "$jwt_head.$jwt_body" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
token="$jwt_head.$jwt_body.$jwt_sig"

"$bin_dir/musicbus-broker" --bind 'tcp://127.0.0.1:*' --ready-file "$tmp/broker.ready" \
  --data "$tmp/data" 2>"$tmp/broker.log" &
pids+=($!)
wait_ready "$tmp/broker.ready" "$!" broker
bus=$(head -n1 "$tmp/broker.ready")
"$bin_dir/musicbus-catalog" --bus "$bus" --data "$tmp/data" 2>>"$tmp/catalog.log" &
pids+=($!)
pl_pids=()
for ((i = 0; i < workers; i++)); do
  "$bin_dir/musicbus-playlists" --bus "$bus" --data "$tmp/data" --ready-file "$tmp/pl$i.ready" \
    2>>"$tmp/playlists.log" &
  pids+=($!)
  pl_pids+=($!)
  wait_ready "$tmp/pl$i.ready" "$!" "playlists worker $i"
done
"$bin_dir/musicbus-gateway" --http 127.0.0.1:0 --bus "$bus" --data "$tmp/data" \
  --jwt-secret-file "$tmp/jwt.secret" \
  --rate-default '1000000/s burst 1000000' --ready-file "$tmp/gateway.ready" \
  2>"$tmp/gateway.log" &
gateway_pid=$!
pids+=($!)
wait_ready "$tmp/gateway.ready" "$gateway_pid" gateway
gw="http://$(head -n1 "$tmp/gateway.ready")"

# req METHOD PATH [JSON] -> body on stdout; fails on a status >= 300.
req() {
  local code
  code=$(curl -sS -o "$tmp/out" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $token" ${3:+--data "$3"} "$gw$2") || code=000
  [ "$code" -lt 300 ] || { echo "$1 $2 -> $code: $(head -c 300 "$tmp/out")" >&2; return 1; }
  cat "$tmp/out"
}

artist=
for _ in $(seq 100); do
  artist=$(req POST /v1/artists '{"name":"Bench Band"}' 2>/dev/null | jq -r .id) && break
  sleep 0.1
done
[ -n "$artist" ] || die "could not create an artist"
album=$(req POST /v1/albums "{\"title\":\"Bench\",\"artist_ids\":[\"$artist\"]}" | jq -r .id)
tracks=()
for i in $(seq 1 100); do
  tracks+=("$(req POST /v1/tracks "{\"title\":\"Song $i\",\"artist_ids\":[\"$artist\"],\"album_id\":\"$album\",\"track_number\":$i,\"duration_ms\":200000}" | jq -r .id)")
done
ids_json=$(printf '"%s",' "${tracks[@]}")
ids_json="[${ids_json%,}]"

# The catalog's events reach the playlists actor through the bus: wait
# until it knows the last track.
playlists=()
first=$(req POST /v1/me/playlists '{"name":"bench 0"}' | jq -r .id)
for _ in $(seq 200); do
  req POST "/v1/playlists/$first/items" "{\"ids\":[\"${tracks[99]}\"]}" >/dev/null 2>&1 && break
  sleep 0.05
done
req DELETE "/v1/playlists/$first/items" "{\"tracks\":[{\"id\":\"${tracks[99]}\"}]}" >/dev/null ||
  die "the playlists actor never learnt the catalog's tracks"
playlists+=("$first")
for ((p = 1; p < n_playlists; p++)); do
  playlists+=("$(req POST /v1/me/playlists "{\"name\":\"bench $p\"}" | jq -r .id)")
done
echo "filling ${#playlists[@]} playlists to 9,000 items..." >&2
for pid in "${playlists[@]}"; do
  for ((k = 0; k < 90; k++)); do
    req POST "/v1/playlists/$pid/items" "{\"ids\":$ids_json}" >/dev/null
  done
done
# One of them full, for the reads.
for ((k = 0; k < 10; k++)); do
  req POST "/v1/playlists/${playlists[0]}/items" "{\"ids\":$ids_json}" >/dev/null
done
total=$(req GET "/v1/playlists/${playlists[0]}" | jq .items_total)
[ "$total" = 10000 ] || die "the read playlist has $total items"

cat >"$tmp/writes.lua" <<'EOF'
local pls, tracks = {}, {}
for id in string.gmatch(os.getenv("PL_IDS"), "[^,]+") do pls[#pls + 1] = id end
for id in string.gmatch(os.getenv("PL_TRACKS"), "[^,]+") do tracks[#tracks + 1] = id end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PL_TOKEN")
request = function()
  local p = pls[math.random(#pls)]
  local t = tracks[math.random(#tracks)]
  return wrk.format(nil, "/v1/playlists/" .. p .. "/items", nil, '{"ids":["' .. t .. '"]}')
end
EOF
cat >"$tmp/reads.lua" <<'EOF'
local pl = os.getenv("PL_READ")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PL_TOKEN")
request = function()
  return wrk.format("GET", "/v1/playlists/" .. pl .. "/items?limit=100&offset=" .. math.random(0, 9900))
end
EOF
export PL_TOKEN=$token PL_READ=${playlists[0]}
export PL_IDS=$(IFS=,; echo "${playlists[*]:1}") PL_TRACKS=$(IFS=,; echo "${tracks[*]}")

# run NAME SCRIPT -> prints one result line
run() {
  wrk -t2 -c"$connections" -d2s -s "$2" "$gw" >/dev/null 2>&1 || true
  local out
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$2" "$gw" 2>&1)
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  bad=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  printf '%-7s %9s req/s  p50 %8s  p99 %8s  %s\n' "$1" "$rps" "$p50" "$p99" \
    "${bad:+NOT VALID: $bad non-2xx answers}"
}
echo "playlists workers: $workers, wrk -t2 -c$connections -d${duration}s, $(nproc) CPUs"
run writes "$tmp/writes.lua"
run reads "$tmp/reads.lua"
left=$(req GET "/v1/playlists/${playlists[1]}" | jq .items_total)
echo "(a write playlist now holds $left items)"

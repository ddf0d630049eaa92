#!/usr/bin/env bash
# Benchmark `qg serve` with wrk (Debian package `wrk`): load 100k quads, then
# drive the server at 64 connections for 30 s each on
#   1. GET /healthz                        (the ceiling: routing, metrics, logging, no store)
#   2. GET /v1/ns/default/query?g=<graph>&s=<person>  (pattern query the key order serves: prefix scan)
#   3. GET /v1/ns/default/query?s=<person>            (pattern query without the graph: full scan)
#   4. POST /v1/ns/default/commits                    (small commits: one new quad each, all on `main`)
# and print requests/s, p50/p99 latency and the error count of each as a Markdown table.
#
#   benches/server-bench.sh                 # defaults below
#   QUADS=100000 CONNS=64 SECS=30 THREADS=2 benches/server-bench.sh
#
# Goal (2-core machine): zero errors, read p99 < 20 ms, read throughput >= 25% of /healthz.
# Not part of CI: timings belong in benchmarks, never in tests.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
QUADS=${QUADS:-100000}
CONNS=${CONNS:-64}
SECS=${SECS:-30}
THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }

cargo build --release --quiet -p qg-store --bin qg --manifest-path "$ROOT/Cargo.toml"
QG="$ROOT/target/release/qg"
mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/server-bench.XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
export QG_DATA="$WORK/data" QG_ACTOR=bench
unset QG_NS

DATA="$ROOT/benches/data/dataset-q$QUADS-g10-s1.nq"
if [ ! -f "$DATA" ]; then
  mkdir -p "$ROOT/benches/data"
  python3 "$ROOT/benches/gen_dataset.py" --quads "$QUADS" --graphs 10 --seed 1 >"$DATA.tmp"
  mv "$DATA.tmp" "$DATA"
fi
"$QG" init >/dev/null
"$QG" bulk-load "$DATA" -m "bench data" >/dev/null
PERSONS=$(grep -o 'person/[0-9]*>' "$DATA" | sort -u | wc -l)
# (graph, subject) pairs of 2000 people, for lookups the quad keys' order serves (graph, subject, ...)
awk '$1 ~ /person\// && !seen[$1 " " $(NF-1)]++ { g = $(NF-1); print "{\"" g "\",\"" $1 "\"},"; if (++n == 2000) exit }' \
  "$DATA" >"$WORK/pairs.lua"
READER=$("$QG" token create --user bench-reader --role reader)
WRITER=$("$QG" token create --user bench-writer --role writer)

"$QG" serve --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q Listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^Listening on //p' "$WORK/serve.out")
[ -n "$URL" ] || { cat "$WORK/serve.log" >&2; exit 1; }

# wrk scripts: each prints one JSON line from done()
cat >"$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"secs":%.3f,"rps":%.1f,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
cat >"$WORK/query.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $READER"
math.randomseed(os.time())
request = function()
  local p = "/v1/ns/default/query?s=%3Chttp://bench.example.org/person/" .. math.random(0, $PERSONS - 1) .. "%3E"
  return wrk.format("GET", p)
end
$(cat "$WORK/report.lua")
LUA
cat >"$WORK/lookup.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $READER"
local lookups = {
$(cat "$WORK/pairs.lua")
}
local function enc(t) return (t:gsub("[<>:/#]", function(c) return string.format("%%%02X", string.byte(c)) end)) end
math.randomseed(os.time())
request = function()
  local p = lookups[math.random(1, #lookups)]
  return wrk.format("GET", "/v1/ns/default/query?g=" .. enc(p[1]) .. "&s=" .. enc(p[2]))
end
$(cat "$WORK/report.lua")
LUA
cat >"$WORK/commit.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $WRITER"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local body = '{"message":"bench","add":"<http://bench.example.org/w/' .. tostring(tid) .. '-' .. n .. '> <http://ex/p> \\\\"' .. n .. '\\\\" .\\\\n"}'
  return wrk.format(nil, "/v1/ns/default/commits", nil, body)
end
$(cat "$WORK/report.lua")
LUA

run() { # name, wrk args...
  local name=$1; shift
  echo "== $name" >&2
  wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 10s "$@" | tee "$WORK/$name.txt" >&2
  tail -n 1 "$WORK/$name.txt"
}
HEALTH=$(run healthz -s "$WORK/report.lua" "$URL/healthz")
LOOKUP=$(run lookup -s "$WORK/lookup.lua" "$URL")
QUERY=$(run query -s "$WORK/query.lua" "$URL")
COMMIT=$(run commit -s "$WORK/commit.lua" "$URL")

python3 - "$HEALTH" "$LOOKUP" "$QUERY" "$COMMIT" "$QUADS" "$CONNS" "$SECS" "$(nproc)" <<'PY'
import json, sys
h, l, q, c = (json.loads(a) for a in sys.argv[1:5])
quads, conns, secs, cores = sys.argv[5:9]
print(f"{quads} quads loaded; wrk, {conns} connections, {secs} s per endpoint, {cores} cores, release build, request logs on\n")
print("| endpoint | requests/s | p50 ms | p99 ms | errors (non-2xx + socket) |")
print("|---|---:|---:|---:|---:|")
for name, r in [
    ("GET /healthz (ceiling)", h),
    ("GET /v1/ns/default/query?g=<graph>&s=<person> (key-prefix lookup)", l),
    ("GET /v1/ns/default/query?s=<person> (no graph: full scan)", q),
    ("POST /v1/ns/default/commits (1 quad each, all on main)", c),
]:
    print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non2xx'] + r['socket_errors']} |")
print(f"\nlookup throughput = {100 * l['rps'] / h['rps']:.0f}% of the /healthz ceiling; "
      f"full-scan query = {100 * q['rps'] / h['rps']:.2f}%")
PY
"$QG" fsck >/dev/null && echo "fsck ok after the run" >&2

#!/usr/bin/env bash
# qg-slo's generated rules against Sloth's for the same 10 SLOs, and the
# cost of evaluating and reporting on them:
#  - rules per SLO (recording and alerting) and `promtool check rules` time,
#    qg-slo vs Sloth. Sloth cannot be installed here (it is a Go binary
#    from GitHub releases, not on crates.io, PyPI, npm or Debian), so its
#    output is written by this script from Sloth's documented naming
#    (sloth.dev, "Prometheus rules" and the generated example of its
#    getting-started page): per SLO 8 SLI recordings
#    (slo:sli_error:ratio_rate{5m,30m,1h,2h,6h,1d,3d,30d}), 7 metadata
#    recordings (slo:objective:ratio, slo:error_budget:ratio,
#    slo:time_period:days, slo:current_burn_rate:ratio,
#    slo:period_burn_rate:ratio, slo:period_error_budget_remaining:ratio,
#    sloth_slo_info) and 2 alerts (page, ticket), with its expressions;
#  - Prometheus rule-evaluation time (prometheus_rule_group_last_duration_seconds)
#    of both rule sets, loaded side by side into a real Prometheus that
#    scrapes a real `qg serve` under load for SCRAPE_SECS (default 600);
#  - `qg-slo report` over a backfilled 28-day window (promtool tsdb
#    create-blocks-from openmetrics) against a local Prometheus: goal < 1 s.
#
#   benches/slo-compare.sh
#   SCRAPE_SECS=60 RUNS=5 benches/slo-compare.sh     # a quick run
#
# Needs: cargo, python3, curl, prometheus and promtool (Debian `prometheus`).
# Outputs: benches/out/slo-compare.md and the two rule files beside it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/benches/lib.sh"
RUNS=${RUNS:-11}
SCRAPE_SECS=${SCRAPE_SECS:-600}
OUT="$ROOT/benches/out"
mkdir -p "$OUT"
for t in prometheus promtool curl python3; do
  command -v "$t" >/dev/null || die "$t is missing (apt-get install prometheus curl python3)"
done
BIN=$(release_build --locked -q -p qg-slo -p qg-store --bin qg-slo --bin qg)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "10 SLO specs, qg-slo's rules and Sloth's"
mkdir -p "$WORK/slo"
python3 - "$WORK" <<'EOF'
import sys, os
work = sys.argv[1]
routes = ["query", "export", "commits", "diff", "branches", "tags", "merges", "audit", "tokens", "ns"]
slos = []
for i, r in enumerate(routes):
    name = f"api-{r}"
    bad = f'qg_http_requests_total{{route=~"/v1/(ns/:ns/)?{r}",status=~"5.."}}'
    total = f'qg_http_requests_total{{route=~"/v1/(ns/:ns/)?{r}"}}'
    target = [0.99, 0.995, 0.999][i % 3]
    slos.append((name, bad, total, target))
    open(os.path.join(work, "slo", f"{name}.yaml"), "w").write(f"""apiVersion: openslo/v1
kind: SLO
metadata:
  name: {name}
spec:
  service: quadgit
  indicator:
    spec:
      ratioMetric:
        counter: true
        bad:
          metricSource:
            type: Prometheus
            spec:
              query: {bad}
        total:
          metricSource:
            type: Prometheus
            spec:
              query: {total}
  timeWindow:
    - duration: 30d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - target: {target}
""")
# Sloth's output for the same SLOs, by its documented naming and expressions
out = ["groups:"]
for name, bad, total, target in slos:
    sid = f"quadgit-{name}"
    lab = f'    labels:\n      sloth_id: {sid}\n      sloth_service: quadgit\n      sloth_slo: {name}\n'
    budget = round(1 - target, 6)
    out.append(f"- name: sloth-slo-sli-recordings-{sid}\n  rules:")
    for w in ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]:
        out.append(f"  - record: slo:sli_error:ratio_rate{w}\n    expr: |\n      (sum(rate({bad}[{w}])))\n      /\n      (sum(rate({total}[{w}])))\n{lab}      sloth_window: {w}")
    out.append(f'  - record: slo:sli_error:ratio_rate30d\n    expr: |\n      sum_over_time(slo:sli_error:ratio_rate5m{{sloth_id="{sid}", sloth_service="quadgit", sloth_slo="{name}"}}[30d])\n      / ignoring (sloth_window)\n      count_over_time(slo:sli_error:ratio_rate5m{{sloth_id="{sid}", sloth_service="quadgit", sloth_slo="{name}"}}[30d])\n{lab}      sloth_window: 30d')
    sel = f'{{sloth_id="{sid}", sloth_service="quadgit", sloth_slo="{name}"}}'
    out.append(f"- name: sloth-slo-meta-recordings-{sid}\n  rules:")
    out.append(f"  - record: slo:objective:ratio\n    expr: vector({target})\n{lab.rstrip()}")
    out.append(f"  - record: slo:error_budget:ratio\n    expr: vector(1-{target})\n{lab.rstrip()}")
    out.append(f"  - record: slo:time_period:days\n    expr: vector(30)\n{lab.rstrip()}")
    out.append(f"  - record: slo:current_burn_rate:ratio\n    expr: |\n      slo:sli_error:ratio_rate5m{sel}\n      / on(sloth_id, sloth_slo, sloth_service) group_left\n      slo:error_budget:ratio{sel}\n{lab.rstrip()}")
    out.append(f"  - record: slo:period_burn_rate:ratio\n    expr: |\n      slo:sli_error:ratio_rate30d{sel}\n      / on(sloth_id, sloth_slo, sloth_service) group_left\n      slo:error_budget:ratio{sel}\n{lab.rstrip()}")
    out.append(f"  - record: slo:period_error_budget_remaining:ratio\n    expr: 1 - slo:period_burn_rate:ratio{sel}\n{lab}      sloth_window: 30d")
    out.append(f'  - record: sloth_slo_info\n    expr: vector(1)\n{lab}      sloth_mode: cli-gen-prom\n      sloth_spec: prometheus/v1\n      sloth_version: v0.11.0\n      sloth_objective: "{target*100:g}"')
    out.append(f"- name: sloth-slo-alerts-{sid}\n  rules:")
    for alert, sev, pairs in [("SLOPage", "page", [("1h", "5m", 14.4), ("6h", "30m", 6)]), ("SLOTicket", "ticket", [("1d", "2h", 3), ("3d", "6h", 1)])]:
        conds = []
        for l, s, f in pairs:
            conds.append(f"(\n        max(slo:sli_error:ratio_rate{s}{sel} > ({f} * {budget})) without (sloth_window)\n        and\n        max(slo:sli_error:ratio_rate{l}{sel} > ({f} * {budget})) without (sloth_window)\n      )")
        out.append(f"  - alert: {alert}\n    expr: |\n      {(chr(10) + '      or' + chr(10) + '      ').join(conds)}\n{lab}      sloth_severity: {sev}\n    annotations:\n      summary: '{{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget burn rate is over expected.'")
open(os.path.join(work, "sloth.rules.yaml"), "w").write("\n".join(out) + "\n")
EOF
"$BIN/qg-slo" generate --spec "$WORK/slo" --output "$WORK/qg-slo.rules.yaml" >&2
cp "$WORK/qg-slo.rules.yaml" "$WORK/sloth.rules.yaml" "$OUT/"
count() { grep -c "^  - $1:" "$2" || true; }
QG_REC=$(count record "$WORK/qg-slo.rules.yaml"); QG_ALERT=$(count alert "$WORK/qg-slo.rules.yaml")
SL_REC=$(count record "$WORK/sloth.rules.yaml"); SL_ALERT=$(count alert "$WORK/sloth.rules.yaml")
promtool check rules --lint-fatal "$WORK/sloth.rules.yaml" >&2 || die "the hand-written Sloth rules do not pass promtool"

say "promtool check rules, $RUNS runs each"
time_check() { python3 - "$1" "$RUNS" <<'EOF'
import subprocess, sys, time
path, runs = sys.argv[1], int(sys.argv[2])
ts = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(["promtool", "check", "rules", path], check=True, capture_output=True)
    ts.append(time.perf_counter() - t)
ts.sort()
print(f"{ts[len(ts)//2]*1000:.1f}")
EOF
}
QG_CHECK=$(time_check "$WORK/qg-slo.rules.yaml")
SL_CHECK=$(time_check "$WORK/sloth.rules.yaml")

say "Prometheus evaluating both rule sets while scraping qg serve under load for ${SCRAPE_SECS}s"
"$BIN/qg" --data "$WORK/data" init >/dev/null
TOKEN=$("$BIN/qg" --data "$WORK/data" token create --user bench --role writer)
QG_PORT=$(free_port)
"$BIN/qg" --data "$WORK/data" serve --listen "127.0.0.1:$QG_PORT" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
PROM_PORT=$(free_port)
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 30s
rule_files:
  - $WORK/qg-slo.rules.yaml
  - $WORK/sloth.rules.yaml
scrape_configs:
  - job_name: quadgit
    static_configs:
      - targets: ['127.0.0.1:$QG_PORT']
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:$PROM_PORT']
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 60); do curl -sf "$PROM/-/ready" >/dev/null && break; sleep 0.5; done
QG="http://127.0.0.1:$QG_PORT"
END_LOAD=$(( $(date +%s) + SCRAPE_SECS ))
i=0
while [ "$(date +%s)" -lt "$END_LOAD" ]; do
  i=$((i + 1))
  curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$QG/v1/ns/default/query?s=%3Fs"
  curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$QG/v1/ns/default/commits?limit=5"
  curl -s -o /dev/null "$QG/v1/ns/default/export"   # 401
  if [ $((i % 20)) -eq 0 ]; then
    curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      -d "{\"message\":\"b$i\",\"add\":\"<http://ex/s$i> <http://ex/p> \\\"v\\\" .\\n\"}" "$QG/v1/ns/default/commits"
  fi
  sleep 0.05
done
eval_ms() {
  curl -s "$PROM/api/v1/query" --data-urlencode "query=sum(prometheus_rule_group_last_duration_seconds{rule_group=~\".*$1.*\"}) * 1000" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("%.2f" % float(r[0]["value"][1]) if r else "n/a")'
}
QG_EVAL=$(eval_ms ";slo-")
SL_EVAL=$(eval_ms ";sloth-slo-")

say "qg-slo report over a backfilled 28-day window, $RUNS runs"
python3 - "$WORK/backfill.om" <<'EOF'
import sys
end = 1796083200  # 2026-12-01T00:00:00Z
start = end - 29 * 86400
lines = ["# TYPE qg_http_requests counter"]
for status, per in (("200", 100), ("500", 1)):
    v = 0
    for t in range(start, end + 1, 60):
        lines.append(f'qg_http_requests_total{{job="quadgit",method="GET",route="/v1/ns/:ns/query",status="{status}"}} {v} {t}')
        v += per if (status == "200" or t % 3600 == 0) else 0
lines.append("# EOF")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
EOF
mkdir -p "$WORK/bf/tsdb"
promtool tsdb create-blocks-from openmetrics --quiet "$WORK/backfill.om" "$WORK/bf/tsdb" >&2
BF_PORT=$(free_port)
printf 'global:\n  evaluation_interval: 1m\nscrape_configs: []\n' >"$WORK/bf/prometheus.yml"
prometheus --config.file="$WORK/bf/prometheus.yml" --storage.tsdb.path="$WORK/bf/tsdb" \
  --storage.tsdb.retention.time=3650d --web.listen-address="127.0.0.1:$BF_PORT" >"$WORK/bf/prometheus.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$BF_PORT/-/ready" >/dev/null && break; sleep 0.5; done
REPORT_MS=$(python3 - "$BIN/qg-slo" "$ROOT/slo/availability.yaml" "http://127.0.0.1:$BF_PORT" "$RUNS" <<'EOF'
import subprocess, sys, time
qg_slo, spec, prom, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ts = []
for _ in range(runs):
    t = time.perf_counter()
    r = subprocess.run([qg_slo, "report", "--spec", spec, "--prometheus", prom, "--window", "28d",
                        "--at", "1796083200", "--json"], capture_output=True)
    ts.append(time.perf_counter() - t)
    if r.returncode not in (0, 1):
        sys.exit(f"qg-slo report failed: {r.stderr.decode()}")
ts.sort()
print(f"{ts[len(ts)//2]*1000:.0f}")
EOF
)

per() { python3 -c "print(f'{$1/10:g}')"; }
ratio() { python3 -c "a,b='$1','$2'; print(f'{float(a)/float(b):.2f}x' if a!='n/a' and b!='n/a' and float(b)>0 else 'n/a')"; }
{
  echo "# qg-slo vs Sloth (10 SLOs, 30-day windows) — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Sloth's side is written by hand from its documented naming (Sloth is not installable here)."
  echo
  echo "| | Sloth | qg-slo | qg-slo / Sloth |"
  echo "|---|---|---|---|"
  echo "| recording rules (10 SLOs) | $SL_REC | $QG_REC | $(ratio "$QG_REC" "$SL_REC") |"
  echo "| recording rules per SLO | $(per "$SL_REC") | $(per "$QG_REC") | |"
  echo "| alerting rules (10 SLOs) | $SL_ALERT | $QG_ALERT | |"
  echo "| promtool check rules, median of $RUNS (ms) | $SL_CHECK | $QG_CHECK | $(ratio "$QG_CHECK" "$SL_CHECK") |"
  echo "| rule evaluation after ${SCRAPE_SECS}s, sum of groups' last duration (ms) | $SL_EVAL | $QG_EVAL | $(ratio "$QG_EVAL" "$SL_EVAL") |"
  echo
  echo "qg-slo report over a backfilled 28-day window (slo/availability.yaml, 2 SLOs), median of $RUNS: ${REPORT_MS} ms (goal: < 1000 ms)"
  echo
  echo "qg-slo's alerts add SLOMetricAbsent and SLOGoodAboveTotal (2 per SLO) that Sloth does not generate;"
  echo "its period rule is event-weighted over raw counters, Sloth's averages 5m ratios."
} | tee "$OUT/slo-compare.md"

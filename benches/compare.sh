#!/usr/bin/env bash
# QuadGit side-by-side benchmarks: qg against oxigraph (loading) and git on
# sorted N-Quads files (versioning), on the same synthetic data, in one run.
#
#   benches/compare.sh                    # full size: 1,000,000 quads
#   QUADS=100000 benches/compare.sh       # quick run
#
# Settings (environment):
#   QUADS=1000000   quads in the data set          GRAPHS=10   named graphs
#   SEED=1          data set / edit seed           LOAD_RUNS=3 runs per load
#   ONE_COMMITS=30  timed one-quad commits         HISTORY=100 commits of history
#   SMALL_SIZE=10   quads changed per other history commit
#   DIFF_QUADS=1000 quads between the two diff states
#   READ_RUNS=10    runs per export (alternating)  DIFF_RUNS=10 runs per diff
#   QG=path         a prebuilt qg to measure (default: build it with cargo, release)
#   HYPERFINE=0     time with plain runs even when hyperfine is installed
#   OXIGRAPH=path   the oxigraph binary (default: `oxigraph` on PATH or in ~/.cargo/bin)
#
# Needs: cargo, python3, git; hyperfine if installed (else plain timing);
# oxigraph if installed (else its row is skipped, with how to install it).
# Outputs: benches/data/dataset-*.nq (data set, shared with the other scripts),
# benches/data/compare-$QUADS/ (stores, git repository), benches/out/compare-$QUADS/
# (raw timings, results-<time>.md) and benches/out/compare-$QUADS-latest.md (the
# table, also printed on stdout). No network except what `cargo build` fetches.
set -euo pipefail
export LC_NUMERIC=C # $EPOCHREALTIME with a decimal point

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUADS=${QUADS:-1000000}
GRAPHS=${GRAPHS:-10}
SEED=${SEED:-1}
LOAD_RUNS=${LOAD_RUNS:-3}
ONE_COMMITS=${ONE_COMMITS:-30}
HISTORY=${HISTORY:-100}
SMALL_SIZE=${SMALL_SIZE:-10}
DIFF_QUADS=${DIFF_QUADS:-1000}
READ_RUNS=${READ_RUNS:-10}
DIFF_RUNS=${DIFF_RUNS:-10}

DATA=$ROOT/benches/data
OUT=$ROOT/benches/out/compare-$QUADS # timings of this script only (other scripts share benches/out)
WORK=$DATA/compare-$QUADS            # stores and git repository of this script
RES=$OUT/results.env
mkdir -p "$DATA" "$OUT"

. "$ROOT/benches/lib.sh"

for tool in python3 git; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ -n ${QG:-} ]] || command -v cargo >/dev/null || die "cargo is required (or QG=path to a built qg)"
if (( HISTORY <= ONE_COMMITS )); then
    die "HISTORY ($HISTORY) must be larger than ONE_COMMITS ($ONE_COMMITS)"
fi
if [[ ${HYPERFINE:-1} == 1 ]] && command -v hyperfine >/dev/null; then
    HYPERFINE=1
else
    HYPERFINE=0
    say "not using hyperfine (Debian: apt-get install hyperfine); timing plain runs"
fi
OXIGRAPH=${OXIGRAPH:-$(command -v oxigraph || true)}
if [[ -z $OXIGRAPH && -x $HOME/.cargo/bin/oxigraph ]]; then
    OXIGRAPH=$HOME/.cargo/bin/oxigraph
fi
if [[ -z $OXIGRAPH ]]; then
    cat >&2 <<'EOF'
== oxigraph not found: the load comparison is skipped. Install it once (it builds
   RocksDB; about 45 minutes on two busy cores):
       apt-get install -y clang libclang-dev
       nice -n 10 cargo install oxigraph-cli --locked
EOF
fi

# ---------------------------------------------------------------- helpers

: >"$RES"
result() { printf '%s=%s\n' "$1" "$2" >>"$RES"; }


# bench NAME RUNS WARMUP PREPARE CMD: median wall time of CMD (seconds) into $RES as NAME.
# PREPARE (may be empty) runs untimed before every run.
bench() {
    local name=$1 runs=$2 warmup=$3 prepare=$4 cmd=$5
    say "$name: $cmd"
    if (( HYPERFINE )); then
        local args=(--style basic --runs "$runs" --warmup "$warmup" --export-json "$OUT/$name.json")
        [[ -n $prepare ]] && args+=(--prepare "$prepare")
        hyperfine "${args[@]}" "$cmd" >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log" >&2; die "$name failed"; }
        result "$name" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$OUT/$name.json")"
    else
        local i t0 t1
        : >"$OUT/$name.times"
        for ((i = 0; i < warmup + runs; i++)); do
            [[ -n $prepare ]] && bash -c "$prepare"
            t0=$EPOCHREALTIME
            bash -c "$cmd" || die "$name failed: $cmd"
            t1=$EPOCHREALTIME
            (( i >= warmup )) && python3 -c "print($t1 - $t0)" >>"$OUT/$name.times"
        done
        result "$name" "$(median <"$OUT/$name.times")"
    fi
}

# bench_pair NAME_A CMD_A NAME_B CMD_B RUNS: like bench, but runs A and B alternately
# (after one warm-up each), so a change in machine load hits both alike.
bench_pair() {
    local a=$1 cmd_a=$2 b=$3 cmd_b=$4 runs=$5 i t0 t1
    say "$a / $b alternately: $cmd_a / $cmd_b"
    bash -c "$cmd_a" || die "$a failed: $cmd_a"
    bash -c "$cmd_b" || die "$b failed: $cmd_b"
    : >"$OUT/$a.times"
    : >"$OUT/$b.times"
    for ((i = 0; i < runs; i++)); do
        t0=$EPOCHREALTIME
        bash -c "$cmd_a"
        t1=$EPOCHREALTIME
        python3 -c "print($t1 - $t0)" >>"$OUT/$a.times"
        t0=$EPOCHREALTIME
        bash -c "$cmd_b"
        t1=$EPOCHREALTIME
        python3 -c "print($t1 - $t0)" >>"$OUT/$b.times"
    done
    result "$a" "$(median <"$OUT/$a.times")"
    result "$b" "$(median <"$OUT/$b.times")"
}

# bytes of a store directory's database, after folding the WAL into it
db_bytes() {
    python3 - "$1/qg.sqlite" <<'EOF'
import os, sqlite3, sys
path = sys.argv[1]
con = sqlite3.connect(path)
con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
con.close()
print(sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)))
EOF
}

dir_bytes() { du -sb "$1" | cut -f1; }

# ---------------------------------------------------------------- build + data

if [[ -n ${QG:-} ]]; then
    say "using the prebuilt $QG"
else
    say "building qg (release)"
    QG=$(release_build -p qg-store --bin qg)/qg
fi
[[ -x $QG ]] || die "no qg binary at $QG"

NQ=$(dataset "$QUADS" "$GRAPHS" "$SEED")
rm -rf "$WORK"
mkdir -p "$WORK"
EDITS=$WORK/edits
SMALL=$((HISTORY - ONE_COMMITS))
python3 "$ROOT/benches/make_edits.py" "$NQ" "$EDITS" --seed "$SEED" \
    --one "$ONE_COMMITS" --small "$SMALL" --small-size "$SMALL_SIZE" --diff "$DIFF_QUADS"
result quads "$QUADS"
result load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
result file_bytes "$(stat -c %s "$NQ")"

# ---------------------------------------------------------------- 1. load

bench load_qg "$LOAD_RUNS" 0 \
    "rm -rf '$WORK/load-qg' && '$QG' --data '$WORK/load-qg' init >/dev/null" \
    "'$QG' --data '$WORK/load-qg' bulk-load '$NQ' -m 'bulk load' >/dev/null"
result size_qg "$(dir_bytes "$WORK/load-qg")"
if [[ -n $OXIGRAPH ]]; then
    result oxigraph_version "$("$OXIGRAPH" --version 2>/dev/null | head -n1)"
    bench load_oxigraph "$LOAD_RUNS" 0 \
        "rm -rf '$WORK/load-ox'" \
        "'$OXIGRAPH' load --location '$WORK/load-ox' --file '$NQ' >/dev/null 2>&1"
    result size_oxigraph "$(dir_bytes "$WORK/load-ox")"
    rm -rf "$WORK/load-ox"
fi

# ---------------------------------------------------------------- 2. one-quad commits

STORE=$WORK/load-qg # the last load: a branch of $QUADS quads
"$QG" --data "$STORE" tag loaded main >/dev/null
before=$(db_bytes "$STORE")
: >"$OUT/commit_ms.times"
: >"$OUT/commit_bytes.values"
say "commit: $ONE_COMMITS one-quad commits on a $QUADS-quad branch"
for ((i = 1; i <= ONE_COMMITS; i++)); do
    f=$(printf '%s/one-%03d.nq' "$EDITS" "$i")
    t0=$EPOCHREALTIME
    "$QG" --data "$STORE" commit -m "one quad $i" --add "$f" --json >"$OUT/commit-$i.json"
    t1=$EPOCHREALTIME
    python3 -c "print(($t1 - $t0) * 1000)" >>"$OUT/commit_ms.times"
    python3 - "$OUT/commit-$i.json" >>"$OUT/commit_bytes.values" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["added"] == 1 and r["removed"] == 0, r
print(r["bytes_written"])
EOF
done
after=$(db_bytes "$STORE")
result commit_ms "$(median <"$OUT/commit_ms.times")"
result commit_ms_max "$(sort -g "$OUT/commit_ms.times" | tail -n1)"
result commit_bytes_written "$(median <"$OUT/commit_bytes.values")"
result commit_file_growth "$(python3 -c "print(($after - $before) / $ONE_COMMITS)")"
result one_commits "$ONE_COMMITS"
# what one durable write costs on this disk, to read the commit latency against
result fsync_ms "$(python3 - "$WORK/fsync-probe" <<'EOF'
import os, statistics, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
times = []
for i in range(30):
    os.pwrite(fd, b"x" * 4096, i * 4096)
    t = time.perf_counter()
    os.fsync(fd)
    times.append((time.perf_counter() - t) * 1000)
os.close(fd)
os.remove(sys.argv[1])
print(statistics.median(times))
EOF
)"

# ---------------------------------------------------------------- 3. history + reading

say "history: $SMALL more commits of $SMALL_SIZE changed quads"
for ((i = 1; i <= SMALL; i++)); do
    a=$(printf '%s/small-%03d-add.nq' "$EDITS" "$i")
    r=$(printf '%s/small-%03d-del.nq' "$EDITS" "$i")
    "$QG" --data "$STORE" commit -m "small change $i" --add "$a" --remove "$r" >/dev/null
done
"$QG" --data "$STORE" tag head main >/dev/null
old=$("$QG" --data "$STORE" log "head~$HISTORY" -n 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
loaded=$("$QG" --data "$STORE" log loaded -n 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
[[ $old == "$loaded" ]] || die "head~$HISTORY is $old, expected the bulk-load commit $loaded"
result history "$HISTORY"
bench_pair read_head "'$QG' --data '$STORE' export head >/dev/null" \
    read_old "'$QG' --data '$STORE' export 'head~$HISTORY' >/dev/null" "$READ_RUNS"

# ---------------------------------------------------------------- 4. diff

# Two kinds of change, each DIFF_QUADS quads: "scattered" (half removals, half
# additions, at random places all over the data: the worst case for a tree
# diff) and "clustered" (a batch of new entities, as an import adds them).
say "diff: two states $DIFF_QUADS quads apart"
"$QG" --data "$STORE" commit -m "diff change" --add "$EDITS/diff-add.nq" --remove "$EDITS/diff-del.nq" >/dev/null
"$QG" --data "$STORE" tag changed main >/dev/null
changes=$("$QG" --data "$STORE" diff head changed | wc -l)
[[ $changes -eq $DIFF_QUADS ]] || die "qg diff head changed printed $changes lines, expected $DIFF_QUADS"
python3 "$ROOT/benches/gen_dataset.py" --quads "$DIFF_QUADS" --graphs "$GRAPHS" --seed "$SEED" \
    --entity-offset "$QUADS" >"$EDITS/batch.nq" # entity numbers past any in the data set
"$QG" --data "$STORE" commit -m "new entities" --add "$EDITS/batch.nq" >/dev/null
"$QG" --data "$STORE" tag batch main >/dev/null
changes=$("$QG" --data "$STORE" diff changed batch | wc -l)
[[ $changes -eq $DIFF_QUADS ]] || die "qg diff changed batch printed $changes lines, expected $DIFF_QUADS"

GITREPO=$WORK/git
mkdir -p "$GITREPO"
git -C "$GITREPO" init -q
gitc() { git -C "$GITREPO" -c user.name=bench -c user.email=bench@example.org -c commit.gpgsign=false "$@"; }
"$QG" --data "$STORE" export head | LC_ALL=C sort >"$GITREPO/data.nq"
gitc add data.nq
gitc commit -q -m "state A"
gitc tag A
"$QG" --data "$STORE" export changed | LC_ALL=C sort >"$GITREPO/data.nq"
gitc commit -q -a -m "state B"
gitc tag B
"$QG" --data "$STORE" export batch | LC_ALL=C sort >"$GITREPO/data.nq"
gitc commit -q -a -m "state C"
gitc tag C
gitc gc -q # packed, as a long-lived repository would be
for pair in "A B" "B C"; do
    git_changes=$(git -C "$GITREPO" diff $pair | grep -c '^[-+]<' || true)
    [[ $git_changes -eq $DIFF_QUADS ]] || die "git diff $pair shows $git_changes changed lines, expected $DIFF_QUADS"
done
result diff_quads "$DIFF_QUADS"
result git_version "$(git --version)"

bench diff_qg "$DIFF_RUNS" 2 "" "'$QG' --data '$STORE' diff head changed >/dev/null"
bench diff_git "$DIFF_RUNS" 1 "" "git -C '$GITREPO' diff A B >/dev/null"
bench diff_qg_batch "$DIFF_RUNS" 2 "" "'$QG' --data '$STORE' diff changed batch >/dev/null"
bench diff_git_batch "$DIFF_RUNS" 1 "" "git -C '$GITREPO' diff B C >/dev/null"

# ---------------------------------------------------------------- table

result load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

MD=$OUT/results-$(date -u +%Y%m%dT%H%M%SZ).md
python3 - "$RES" "$HYPERFINE" >"$MD" <<'EOF'
import platform, subprocess, sys, time, os
r = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    r[k] = v
hyperfine = sys.argv[2] == "1"
f = lambda k: float(r[k])
n = int(r["quads"])

def secs(s):
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"

def faster(ratio, digits):
    """peer time / qg time, as words."""
    if ratio >= 1:
        return f"qg {ratio:.{digits}f}x faster"
    return f"qg {1 / ratio:.{digits}f}x slower"

def kib(b):
    return f"{b / 1024:.1f} KiB"

def mib(b):
    return f"{b / 1048576:.1f} MiB"

rows = []
if "load_oxigraph" in r:
    ratio = f("load_oxigraph") / f("load_qg")
    rows.append((f"load {n:,} quads (N-Quads, {mib(f('file_bytes'))})",
                 f"`qg bulk-load` {secs(f('load_qg'))}", f"`oxigraph load` {secs(f('load_oxigraph'))}",
                 faster(ratio, 2),
                 "qg faster than oxigraph", "met" if ratio > 1 else "**missed**"))
    rows.append(("store size after the load", mib(f("size_qg")), mib(f("size_oxigraph")),
                 f"qg {f('size_qg') / f('size_oxigraph'):.2f}x the size", "(info)", ""))
else:
    rows.append((f"load {n:,} quads", f"`qg bulk-load` {secs(f('load_qg'))}", "oxigraph not installed", "-",
                 "qg faster than oxigraph", "not measured"))
    rows.append(("store size after the load", mib(f("size_qg")), "-", "-", "(info)", ""))
ms = f("commit_ms")
rows.append((f"one-quad commit on a {n:,}-quad branch (median of {r['one_commits']}, whole `qg commit` process)",
             f"{ms:.1f} ms (max {f('commit_ms_max'):.1f} ms)", "-", "-", "< 10 ms", "met" if ms < 10 else "**missed**"))
rows.append(("(context) one `fsync` of 4 KiB on this disk, median of 30", f"{f('fsync_ms'):.1f} ms", "-", "-", "(info)", ""))
bw, fg = f("commit_bytes_written"), f("commit_file_growth")
rows.append(("bytes added per one-quad commit",
             f"{kib(bw)} objects (`bytes_written`, median); {kib(fg)} qg.sqlite growth (mean)", "-", "-", "< 64 KiB",
             "met" if max(bw, fg) < 64 * 1024 else "**missed**"))
ro, rh = f("read_old"), f("read_head")
rows.append((f"export a commit {r['history']} back vs the head (`qg export` to /dev/null)",
             f"head~{r['history']} {secs(ro)}", f"head {secs(rh)}", f"{ro / rh:.2f}x the head's time",
             "<= 1.2x", "met" if ro / rh <= 1.2 else "**missed**"))
for key, what in (("", "scattered: half removed, half added, at random places"),
                  ("_batch", "clustered: a batch of new entities added")):
    dq, dg = f("diff_qg" + key), f("diff_git" + key)
    rows.append((f"diff of two states {int(r['diff_quads']):,} quads apart ({what})",
                 f"`qg diff` {secs(dq)}", f"`git diff` {secs(dg)}", faster(dg / dq, 1),
                 ">= 10x faster than git", "met" if dg / dq >= 10 else "**missed**"))

cpu = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores"
      + (f" ({cpu})" if cpu else "") + f", {platform.system()} {platform.release()};"
      + (" timings: hyperfine medians." if hyperfine else " timings: medians of plain runs.")
      + f" Load average (1/5/15 min) {r['load_start']} at the start, {r['load_end']} at the end.")
if "oxigraph_version" in r:
    print(f"Peers: {r['oxigraph_version']}, {r['git_version']}.")
else:
    print(f"Peers: {r['git_version']}.")
print()
print("| benchmark | qg | peer | ratio | goal | result |")
print("|---|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
EOF
cp "$MD" "$ROOT/benches/out/compare-$QUADS-latest.md"
echo
cat "$MD"
echo
say "table saved as $MD"

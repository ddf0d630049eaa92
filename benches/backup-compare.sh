#!/usr/bin/env bash
# qg-backup beside restic (and a plain `cp` of the database: the I/O ceiling),
# backing up the same QuadGit data directory, in one run:
#
#   benches/backup-compare.sh                 # 1,000,000 quads, 100 commits of history
#   QUADS=100000 benches/backup-compare.sh    # quick run
#
# Rows: full backup time (qg-backup plain and --encrypt, restic, cp; the cp
# ratio as the median of 7 alternating runs), the incremental after a 1%
# change (bytes and time, and what its commit deltas replaced; restic's second
# snapshot), restore time (the RTO at this size, the ratio as the median of
# RESTORE_RUNS alternating runs; the restored objects are compared byte for
# byte), and peak RSS of every backup and restore.
#
# Settings (environment): QUADS=1000000 GRAPHS=10 SEED=1 HISTORY=100 (commits on
# main) CHANGE_PCT=1 (quads changed before the incremental, % of QUADS),
# RESTORE_RUNS=5 (alternating restores behind the restore ratio), QG=path and
# QG_BACKUP=path (prebuilt release binaries; default: cargo build --release).
# Needs: cargo, python3, restic (Debian: apt-get install restic), GNU time
# (/usr/bin/time). Outputs: benches/data/backup-$QUADS/ (stores, targets,
# repositories) and benches/out/backup-results-$QUADS.md. Every number is one
# run (unless its row says otherwise) on a warm page cache; the store is idle
# while it is backed up.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUADS=${QUADS:-1000000}
GRAPHS=${GRAPHS:-10}
SEED=${SEED:-1}
HISTORY=${HISTORY:-100}
CHANGE_PCT=${CHANGE_PCT:-1}
RESTORE_RUNS=${RESTORE_RUNS:-5}

DATA=$ROOT/benches/data
OUT=$ROOT/benches/out
WORK=$DATA/backup-$QUADS
RESULTS=$OUT/backup-results-$QUADS.md
mkdir -p "$DATA" "$OUT"

. "$ROOT/benches/lib.sh"

for tool in cargo python3 restic; do
    command -v "$tool" >/dev/null || die "$tool is required (restic: apt-get install restic)"
done
[[ -x /usr/bin/time ]] || die "GNU time is required for peak RSS (apt-get install time)"

# ---------------------------------------------------------------- build + data

if [[ -z ${QG:-} || -z ${QG_BACKUP:-} ]]; then
    say "building qg and qg-backup (release)"
    BIN=$(release_build -p qg-store --bin qg -p qg-backup --bin qg-backup)
    QG=${QG:-$BIN/qg}
    QG_BACKUP=${QG_BACKUP:-$BIN/qg-backup}
fi
[[ -x $QG && -x $QG_BACKUP ]] || die "no qg / qg-backup binaries at $QG / $QG_BACKUP"

NQ=$(dataset "$QUADS" "$GRAPHS" "$SEED")
CHANGE=$((QUADS * CHANGE_PCT / 100))
EDITS=$WORK/edits
rm -rf "$WORK"
mkdir -p "$WORK"
python3 "$ROOT/benches/make_edits.py" "$NQ" "$EDITS" --seed "$SEED" \
    --one 0 --small $((HISTORY - 1)) --small-size 10 --diff "$CHANGE"

STORE=$WORK/store
export QG_DATA=$STORE
export QG_BACKUP_KEY=4d7f1e0a9c2b8e3f6a5d4c1b0e9f8a7d6c5b4a39281706f5e4d3c2b1a0f9e8d7
export RESTIC_PASSWORD=bench-password-not-secret
export RESTIC_CACHE_DIR=$WORK/restic-cache
say "building a store: $QUADS quads, then $((HISTORY - 1)) more commits"
"$QG" init >/dev/null
"$QG" bulk-load "$NQ" -m "import" >/dev/null
for ((k = 1; k < HISTORY; k++)); do
    f=$(printf '%s/small-%03d' "$EDITS" "$k")
    "$QG" commit -m "edit $k" --add "$f-add.nq" --remove "$f-del.nq" >/dev/null
done
COMMITS=$("$QG" log --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
DB_BYTES=$(python3 - "$STORE/qg.sqlite" <<'EOF'
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1]); con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(); con.close()
print(os.path.getsize(sys.argv[1]))
EOF
)

# ---------------------------------------------------------------- helpers

# measure NAME CMD...: wall seconds and peak RSS (KiB) of CMD into $WORK/NAME.{time,out}
measure() {
    local name=$1
    shift
    say "$name: $*"
    /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" \
        || { cat "$WORK/$name.err" >&2; die "$name failed"; }
}
secs() { cut -d' ' -f1 "$WORK/$1.time"; }
rss_mib() { python3 -c "print(f'{$(cut -d' ' -f2 "$WORK/$1.time") / 1024:.0f}')"; }
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$WORK/$1.out"; }
bytes() { du -sb "$1" | cut -f1; }
mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

# ---------------------------------------------------------------- full backups

mkdir -p "$WORK/cp"
measure cp bash -c "cp '$STORE/qg.sqlite' '$WORK/cp/qg.sqlite' && sync '$WORK/cp/qg.sqlite'"
measure qg_full "$QG_BACKUP" full --to "$WORK/qg-plain" --json
measure qg_full_enc "$QG_BACKUP" full --to "$WORK/qg-enc" --encrypt --json
# cp and qg-backup full again, alternating, 7 times each: GNU time's 10 ms
# steps are too coarse for the ratio; the median of each goes in the table
python3 - "$QG_BACKUP" "$STORE" "$WORK" >"$WORK/ceiling.out" <<'EOF'
import statistics, subprocess, sys, time
qgb, store, work = sys.argv[1:]
def run(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t
cp, full = [], []
for i in range(7):
    cp.append(run(["bash", "-c", f"cp '{store}/qg.sqlite' '{work}/cp/qg.sqlite' && sync '{work}/cp/qg.sqlite'"]))
    full.append(run([qgb, "full", "--to", f"{work}/qg-timing", "--json"]))
print(f"{statistics.median(cp):.3f} {statistics.median(full):.3f}")
EOF
restic init --repo "$WORK/restic" >/dev/null 2>&1
measure restic_full restic --repo "$WORK/restic" backup --quiet "$STORE"
RESTIC_FULL_BYTES=$(bytes "$WORK/restic")

# ---------------------------------------------------------------- the 1% change + incrementals

say "changing $CHANGE quads ($CHANGE_PCT%)"
"$QG" commit -m "the $CHANGE_PCT% change" --add "$EDITS/diff-add.nq" --remove "$EDITS/diff-del.nq" >/dev/null
measure qg_inc "$QG_BACKUP" incremental --to "$WORK/qg-plain" --json
measure qg_inc_enc "$QG_BACKUP" incremental --to "$WORK/qg-enc" --json
measure restic_inc restic --repo "$WORK/restic" backup --quiet "$STORE"
RESTIC_INC_BYTES=$(($(bytes "$WORK/restic") - RESTIC_FULL_BYTES))

# ---------------------------------------------------------------- restores (full + incremental)

measure qg_restore "$QG_BACKUP" restore --from "$WORK/qg-plain" --to "$WORK/qg-restored" --json
measure qg_restore_enc "$QG_BACKUP" restore --from "$WORK/qg-enc" --to "$WORK/qg-restored-enc" --json
measure restic_restore restic --repo "$WORK/restic" restore latest --target "$WORK/restic-restored"
cmp <("$QG" export) <("$QG" --data "$WORK/qg-restored" export) || die "the qg-backup restore differs"
# exact: the restored store has the same objects, byte for byte (rebuilt delta trees included)
python3 - "$STORE/qg.sqlite" "$WORK/qg-restored/qg.sqlite" <<'EOF' || die "the qg-backup restore's objects differ"
import sqlite3, sys
a, b = (set(sqlite3.connect(p).execute("SELECT ns, id, data FROM objects")) for p in sys.argv[1:])
sys.exit(0 if a == b else 1)
EOF
cmp <("$QG" export) <("$QG" --data "$WORK/restic-restored/$STORE" export) || die "the restic restore differs"
# the restore row's ratio: medians of RESTORE_RUNS alternating runs of both
# (one run is at the mercy of this shared machine's noise), each into a fresh
# directory
python3 - "$QG_BACKUP" "$WORK" "$RESTORE_RUNS" >"$WORK/restore-medians.out" <<'EOF'
import shutil, statistics, subprocess, sys, time
qgb, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def run(cmd, dest):
    shutil.rmtree(dest, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t
qg, restic = [], []
for i in range(runs):
    qg.append(run([qgb, "restore", "--from", f"{work}/qg-plain", "--to", f"{work}/qg-restored-m", "--json"], f"{work}/qg-restored-m"))
    restic.append(run(["restic", "--repo", f"{work}/restic", "restore", "latest", "--target", f"{work}/restic-restored-m"], f"{work}/restic-restored-m"))
print(f"{statistics.median(qg):.3f} {statistics.median(restic):.3f}")
EOF

# ---------------------------------------------------------------- report

QG_FULL_BYTES=$(json qg_full '["bytes"]')
QG_INC_BYTES=$(json qg_inc '["bytes"]')
QG_INC_ENC_BYTES=$(json qg_inc_enc '["bytes"]')
QG_INC_DELTAS=$(json qg_inc '["counts"]["deltas"]')
QG_INC_NODES=$(json qg_inc '["counts"]["delta_nodes"]')
QG_INC_NODE_BYTES=$(json qg_inc '["counts"]["delta_node_bytes"]')
{
    echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores ($(python3 -c 'import platform; print(platform.processor() or platform.machine())')), $(uname -sr); $(restic version | cut -d' ' -f1-2); one run each unless a row says otherwise, warm page cache."
    echo "Store: $QUADS quads in $GRAPHS graphs, $COMMITS commits on main; qg.sqlite $(mib "$DB_BYTES") MiB. The change: $CHANGE quads ($CHANGE_PCT%: $((CHANGE / 2)) added, $((CHANGE / 2)) removed) in one commit."
    echo
    echo "| benchmark | qg-backup | peer | ratio | goal | result |"
    echo "|---|---|---|---|---|---|"
    r=$(ratio "$(secs qg_full)" "$(secs restic_full)")
    echo "| full backup time (to a directory) | $(secs qg_full) s plain, $(secs qg_full_enc) s --encrypt | restic $(secs restic_full) s | $r× restic (--encrypt: $(ratio "$(secs qg_full_enc)" "$(secs restic_full)")×) | faster than restic | $(python3 -c "print('met' if $(secs qg_full) < $(secs restic_full) else '**missed**')") |"
    read -r CP_MED FULL_MED <"$WORK/ceiling.out"
    r=$(ratio "$FULL_MED" "$CP_MED")
    echo "| full backup vs the I/O ceiling (median of 7, alternating) | $FULL_MED s | \`cp\` + fsync of qg.sqlite $CP_MED s | $r× cp | ≤ 1.5× cp | $(python3 -c "print('met' if $r <= 1.5 else '**missed**')") |"
    echo "| full backup size | $(mib "$QG_FULL_BYTES") MiB | restic repo $(mib "$RESTIC_FULL_BYTES") MiB | $(ratio "$QG_FULL_BYTES" "$RESTIC_FULL_BYTES")× | (info) | |"
    r=$(python3 -c "print(f'{100 * $QG_INC_BYTES / $QG_FULL_BYTES:.2f}')")
    echo "| incremental after the $CHANGE_PCT% change: bytes | $(python3 -c "print(f'{$QG_INC_BYTES / 1024:.1f}')") KiB plain, $(python3 -c "print(f'{$QG_INC_ENC_BYTES / 1024:.1f}')") KiB --encrypt ($r% of the full; $QG_INC_DELTAS commit delta instead of $QG_INC_NODES tree nodes of $(mib "$QG_INC_NODE_BYTES") MiB) | restic 2nd snapshot +$(mib "$RESTIC_INC_BYTES") MiB | $(python3 -c "print(f'{$QG_INC_BYTES / $RESTIC_INC_BYTES:.4f}')")× restic | ≤ 2% of the full, smaller than restic | $(python3 -c "print('met' if $r <= 2 and $QG_INC_BYTES < $RESTIC_INC_BYTES else '**missed**')") |"
    echo "| incremental after the $CHANGE_PCT% change: time | $(secs qg_inc) s | restic $(secs restic_inc) s | $(ratio "$(secs qg_inc)" "$(secs restic_inc)")× | faster than restic | $(python3 -c "print('met' if $(secs qg_inc) < $(secs restic_inc) else '**missed**')") |"
    read -r QG_RESTORE_MED RESTIC_RESTORE_MED <"$WORK/restore-medians.out"
    echo "| restore, full + incremental (RTO; median of $RESTORE_RUNS, alternating) | $QG_RESTORE_MED s (one run: $(secs qg_restore) s plain, $(secs qg_restore_enc) s --encrypt; incl. the fsck-equivalent check) | restic restore $RESTIC_RESTORE_MED s (one run: $(secs restic_restore) s) | $(ratio "$QG_RESTORE_MED" "$RESTIC_RESTORE_MED")× | faster than restic | $(python3 -c "print('met' if $QG_RESTORE_MED < $RESTIC_RESTORE_MED else '**missed**')") |"
    maxrss=$(python3 -c "print(max($(rss_mib qg_full), $(rss_mib qg_full_enc), $(rss_mib qg_inc), $(rss_mib qg_restore), $(rss_mib qg_restore_enc)))")
    echo "| peak RSS | full $(rss_mib qg_full) MiB, --encrypt $(rss_mib qg_full_enc) MiB, incremental $(rss_mib qg_inc) MiB, restore $(rss_mib qg_restore) MiB, --encrypt $(rss_mib qg_restore_enc) MiB | restic backup $(rss_mib restic_full) MiB, restore $(rss_mib restic_restore) MiB | - | < 100 MiB | $(python3 -c "print('met' if $maxrss < 100 else '**missed**')") |"
} >"$RESULTS"
cat "$RESULTS"

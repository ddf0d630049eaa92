#!/usr/bin/env bash
# qg-backup's memory on a large store: the goal is peak RSS < 100 MiB for
# backup and restore whatever the store size (backup-compare.sh measures
# speed at 1M quads; this measures memory and sizes at QUADS).
#
#   benches/backup-scale.sh                  # 8,000,000 quads (about 2 minutes)
#   QUADS=20000000 benches/backup-scale.sh
#
# Steps, each timed with GNU time (wall, peak RSS): bulk-load QUADS quads,
# `qg-backup full`, one commit changing 1% of the quads (half removed, every
# 200th line of the data set; half new entities), `qg-backup incremental`,
# `qg-backup restore` of the chain; then the restored store's export and
# objects are compared with the original's.
#
# Settings: QUADS=8000000 GRAPHS=10 SEED=1; QG=path QG_BACKUP=path (prebuilt
# release binaries; default: cargo build --release). Needs python3, GNU time.
# Outputs: benches/data/scale-$QUADS/, benches/out/backup-scale-$QUADS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUADS=${QUADS:-8000000}
GRAPHS=${GRAPHS:-10}
SEED=${SEED:-1}
DATA=$ROOT/benches/data
WORK=$DATA/scale-$QUADS
RESULTS=$ROOT/benches/out/backup-scale-$QUADS.md
mkdir -p "$DATA" "$ROOT/benches/out"
. "$ROOT/benches/lib.sh"
[[ -x /usr/bin/time ]] || die "GNU time is required (apt-get install time)"

if [[ -z ${QG:-} || -z ${QG_BACKUP:-} ]]; then
    say "building qg and qg-backup (release)"
    BIN=$(release_build -p qg-store --bin qg -p qg-backup --bin qg-backup)
    QG=${QG:-$BIN/qg}
    QG_BACKUP=${QG_BACKUP:-$BIN/qg-backup}
fi

NQ=$(dataset "$QUADS" "$GRAPHS" "$SEED")
rm -rf "$WORK"
mkdir -p "$WORK"
STORE=$WORK/store
export QG_DATA=$STORE

# measure NAME CMD...: wall seconds and peak RSS (KiB) into $WORK/NAME.time
measure() {
    local name=$1
    shift
    say "$name: $*"
    /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.out"
}
secs() { cut -d' ' -f1 "$WORK/$1.time"; }
mib() { python3 -c "print(f'{$(cut -d' ' -f2 "$WORK/$1.time") / 1024:.0f}')"; }
json() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))$2)" "$WORK/$1.out"; }

"$QG" init >/dev/null
measure load "$QG" bulk-load "$NQ" -m "load $QUADS quads"
measure full "$QG_BACKUP" full --to "$WORK/backups" --json
CHANGE=$((QUADS / 100))
awk -v every=$((QUADS * 2 / CHANGE)) 'NR % every == 0' "$NQ" | head -n $((CHANGE / 2)) >"$WORK/del.nq"
python3 "$ROOT/benches/gen_dataset.py" --quads $((CHANGE / 2)) --graphs "$GRAPHS" --seed $((SEED + 1)) \
    --entity-offset 900000000 >"$WORK/add.nq"
measure commit "$QG" commit -m "change 1%" --add "$WORK/add.nq" --remove "$WORK/del.nq" --json
measure incremental "$QG_BACKUP" incremental --to "$WORK/backups" --json
measure restore "$QG_BACKUP" restore --from "$WORK/backups" --to "$WORK/restored" --json
cmp <("$QG" export) <("$QG" --data "$WORK/restored" export) || die "the restore's export differs"
python3 - "$STORE/qg.sqlite" "$WORK/restored/qg.sqlite" <<'EOF' || die "the restore's objects differ"
import sqlite3, sys
a, b = (set(sqlite3.connect(p).execute("SELECT ns, id, data FROM objects")) for p in sys.argv[1:])
sys.exit(0 if a == b else 1)
EOF

FULL=$(json full '["bytes"]')
INC=$(json incremental '["bytes"]')
{
    echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores, $(uname -sr); one run each; the restored store's export and objects equal the original's."
    echo "Store: $QUADS quads in $GRAPHS graphs; qg.sqlite $(python3 -c "import os; print(f'{os.path.getsize(\"$STORE/qg.sqlite\") / 1048576:.0f}')") MiB; the change: $CHANGE quads (1%) in one commit."
    echo
    echo "| step | time | peak RSS | size | goal | result |"
    echo "|---|---|---|---|---|---|"
    echo "| \`qg bulk-load\` (context) | $(secs load) s | $(mib load) MiB | | | |"
    echo "| \`qg commit\` of the 1% change (context) | $(secs commit) s | $(mib commit) MiB | | | |"
    for step in full incremental restore; do
        size=""
        [[ $step == full ]] && size="$(python3 -c "print(f'{$FULL / 1048576:.1f} MiB')")"
        [[ $step == incremental ]] && size="$(python3 -c "print(f'{$INC / 1024:.1f} KiB ({100 * $INC / $FULL:.2f}% of the full; {$(json incremental '["counts"]["deltas"]')} commit delta)')")"
        ok=$(python3 -c "print('met' if $(cut -d' ' -f2 "$WORK/$step.time") < 100 * 1024 else '**missed**')")
        echo "| \`qg-backup $step\` | $(secs $step) s | $(mib $step) MiB | $size | peak RSS < 100 MiB | $ok |"
    done
    echo "| the restore's final check | | | tree nodes held on disk: $(json restore '["check"]["nodes_on_disk"]') | | |"
} >"$RESULTS"
cat "$RESULTS"

#!/usr/bin/env bash
# QuadGit encryption and key-rotation benchmarks, next to the peers that bound
# them: SQLite's own `VACUUM INTO` of the same database (rewriting every byte:
# the I/O ceiling) and `openssl speed -evp aes-256-gcm` (the crypto ceiling).
#
#   benches/crypto-compare.sh                  # full size: 1,000,000 quads
#   QUADS=100000 benches/crypto-compare.sh     # quick run
#
# What it measures (medians of RUNS runs, each on a fresh copy of the store):
#   - `qg-rotate-keys encrypt` of a plaintext namespace of QUADS quads, and
#     `VACUUM INTO` of that same database;         goal: within 2x of VACUUM INTO
#   - `qg-rotate-keys dek` of the encrypted namespace, and `VACUUM INTO` of it;
#                                                   goal: within 2x of VACUUM INTO
#   - both as MB/s of object bodies, beside `openssl speed -evp aes-256-gcm`
#   - `qg-rotate-keys master` on MASTER_NS namespaces holding data;  goal: < 1 s
#     (and on the one big namespace, to show it does not depend on data size)
#   - `qg ns unlock` (Argon2id at the default m=64 MiB, t=3, p=4), reported,
#     beside a `qg ns list` (process start and store open) as the floor
#
# Settings (environment):
#   QUADS=1000000   quads in the big namespace       GRAPHS=10 SEED=1 (data set)
#   RUNS=3          runs of encrypt / dek / VACUUM INTO
#   BATCH=2000      objects per batch for encrypt and dek (the tool's default)
#   MASTER_NS=100   namespaces for the master-key rotation
#   MASTER_QUADS=1000  quads in each of them        MASTER_RUNS=5
#   UNLOCK_RUNS=5   runs of `qg ns unlock`
#   QG=path QG_ROTATE_KEYS=path   prebuilt binaries (default: cargo build --release)
#
# Needs: cargo, python3 (its sqlite3 module runs VACUUM INTO), openssl.
# Outputs: benches/data/crypto-$QUADS/ (stores), benches/out/crypto-$QUADS-latest.md
# (the table, also printed on stdout).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUADS=${QUADS:-1000000}
GRAPHS=${GRAPHS:-10}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
BATCH=${BATCH:-2000}
MASTER_NS=${MASTER_NS:-100}
MASTER_QUADS=${MASTER_QUADS:-1000}
MASTER_RUNS=${MASTER_RUNS:-5}
UNLOCK_RUNS=${UNLOCK_RUNS:-5}

DATA=$ROOT/benches/data
OUT=$ROOT/benches/out
WORK=$DATA/crypto-$QUADS
TIMES=$OUT/crypto-$QUADS.times
RESULT=$OUT/crypto-$QUADS-latest.md
mkdir -p "$DATA" "$OUT"

. "$ROOT/benches/lib.sh"

for tool in cargo python3 openssl; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
python3 -c 'import sqlite3, sys; assert sqlite3.sqlite_version_info >= (3, 27), sqlite3.sqlite_version' ||
    die "python3's sqlite3 is too old for VACUUM INTO (needs SQLite >= 3.27)"

# Keys for the benchmark only (never reuse them).
KEY1=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
KEY2=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export QUADGIT_MASTER_KEY=$KEY1
export QG_ACTOR=bench
unset QG_NS QG_PASSWORD QG_NEW_PASSWORD QG_UNLOCK_TOKEN QG_MASTER_KEY_FILE QG_CONFIG

# ---------------------------------------------------------------- helpers

: >"$TIMES"
# record NAME VALUE
record() { printf '%s=%s\n' "$1" "$2" >>"$TIMES"; }
get() { sed -n "s/^$1=//p" "$TIMES" | tail -n 1; }

# timed NAME RUNS PREPARE CMD: median wall time (s) of CMD over RUNS runs, and
# the median CPU time (user + system) it used; PREPARE (may be empty) runs
# untimed before each run. Both run with bash -c. CPU time is recorded because
# wall time suffers when other jobs share the machine.
timed() {
    local name=$1 runs=$2 prepare=$3 cmd=$4
    say "$name ($runs runs): $cmd"
    python3 - "$runs" "$prepare" "$cmd" "$OUT/crypto-$name" >"$OUT/crypto-$name.times" <<'EOF' || die "$name failed: $cmd"
import os, resource, subprocess, sys, time
runs, prepare, cmd, base = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
for _ in range(runs):
    if prepare:
        subprocess.run(["bash", "-c", prepare], check=True)
    with open(base + ".out", "wb") as out, open(base + ".err", "wb") as err:
        c0, t0 = cpu(), time.perf_counter()
        p = subprocess.run(["bash", "-c", cmd], stdout=out, stderr=err)
        t1, c1 = time.perf_counter(), cpu()
    if p.returncode != 0:
        sys.stderr.write(open(base + ".err").read())
        sys.exit(1)
    print(t1 - t0, c1 - c0)
EOF
    record "$name" "$(cut -d' ' -f1 "$OUT/crypto-$name.times" | median)"
    record "${name}_cpu" "$(cut -d' ' -f2 "$OUT/crypto-$name.times" | median)"
}

# fresh_copy FROM TO: a copy of a store directory (WAL folded in first)
fresh_copy() {
    python3 - "$1/qg.sqlite" <<'EOF'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
con.close()
EOF
    rm -rf "$2"
    mkdir -p "$2/hooks"
    cp "$1/qg.sqlite" "$2/qg.sqlite"
    # the copy is set-up: its write-back must not run during the timed job
    # (whose own fsync would wait for it)
    sync
}
export -f fresh_copy

# status_field DIR NS FIELD: a field of `qg-rotate-keys status --json` for NS
status_field() {
    "$QG_ROTATE_KEYS" --data "$1" --json status |
        python3 -c 'import json, sys; print(next(n for n in json.load(sys.stdin)["namespaces"] if n["name"] == sys.argv[1])[sys.argv[2]])' "$2" "$3"
}

export_digest() {  # export_digest DIR: sha256 of every ref's export in namespace default
    local ref out=""
    for ref in $("$QG" --data "$1" --json branch | python3 -c 'import json, sys; print(*(r["name"] for r in json.load(sys.stdin)))') \
               $("$QG" --data "$1" --json tag | python3 -c 'import json, sys; print(*(r["name"] for r in json.load(sys.stdin)))'); do
        out+="$ref $("$QG" --data "$1" export "$ref" | sha256sum | cut -c1-16) "
    done
    echo "$out"
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)  # other work on the machine skews wall times

# ---------------------------------------------------------------- build + data

if [[ -z ${QG:-} || -z ${QG_ROTATE_KEYS:-} ]]; then
    say "building qg and qg-rotate-keys (release)"
    BIN=$(release_build -p qg-store -p qg-rotate-keys)
    QG=$BIN/qg
    QG_ROTATE_KEYS=$BIN/qg-rotate-keys
fi
[[ -x $QG ]] || die "no qg binary at $QG"
[[ -x $QG_ROTATE_KEYS ]] || die "no qg-rotate-keys binary at $QG_ROTATE_KEYS"
export QG QG_ROTATE_KEYS

NQ=$(dataset "$QUADS" "$GRAPHS" "$SEED")   # shared with compare.sh

rm -rf "$WORK"
mkdir -p "$WORK"
PLAIN=$WORK/plain        # template: the big namespace, plaintext
ENC=$WORK/encrypted      # template: the same, after `encrypt`
RUN=$WORK/run            # scratch copy each timed run works on

say "loading $QUADS quads into a plaintext namespace"
"$QG" --data "$PLAIN" init >/dev/null
"$QG" --data "$PLAIN" bulk-load "$NQ" -m "bulk load" >/dev/null
# a second branch and a tag, so refs are rewritten too
"$QG" --data "$PLAIN" branch side >/dev/null
"$QG" --data "$PLAIN" tag v1 >/dev/null
fresh_copy "$PLAIN" "$RUN" # folds the WAL into the template
OBJECTS=$(status_field "$PLAIN" default objects)
BODY_BYTES=$(status_field "$PLAIN" default bytes)
PLAIN_DB_BYTES=$(stat -c %s "$PLAIN/qg.sqlite")
record objects "$OBJECTS"
record body_bytes "$BODY_BYTES"
say "$OBJECTS objects, $BODY_BYTES bytes of object bodies, database $PLAIN_DB_BYTES bytes"
DIGEST_PLAIN=$(export_digest "$PLAIN")

# ---------------------------------------------------------------- encrypt vs VACUUM INTO

# timed_vacuum NAME DB: median time of `VACUUM INTO` a fresh file, timed inside
# python3 (interpreter start-up excluded; the qg timings include their ~5 ms
# process start, see the `floor` row)
timed_vacuum() {
    say "$1 ($RUNS runs): VACUUM INTO of $2"
    python3 - "$2" "$WORK/vacuum.sqlite" "$RUNS" >"$OUT/crypto-$1.times" <<'EOF'
import os, sqlite3, sys, time
src, dst, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(runs):
    if os.path.exists(dst):
        os.remove(dst)
    con = sqlite3.connect(src)
    t0, c0 = time.perf_counter(), time.process_time()
    con.execute("VACUUM INTO ?", (dst,))
    t1, c1 = time.perf_counter(), time.process_time()
    con.close()
    print(t1 - t0, c1 - c0)
os.remove(dst)
EOF
    record "$1" "$(cut -d' ' -f1 "$OUT/crypto-$1.times" | median)"
    record "${1}_cpu" "$(cut -d' ' -f2 "$OUT/crypto-$1.times" | median)"
}

timed_vacuum vacuum_plain "$PLAIN/qg.sqlite"

timed encrypt "$RUNS" "fresh_copy '$PLAIN' '$RUN'" \
    "'$QG_ROTATE_KEYS' --data '$RUN' --ns default encrypt --batch $BATCH --json"
python3 - "$OUT/crypto-encrypt.out" "$OBJECTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["objects_rewritten"] == int(sys.argv[2]) and not r["resumed"] and r["to_version"] == 1, r
EOF
fresh_copy "$RUN" "$ENC"
ENC_DB_BYTES=$(stat -c %s "$ENC/qg.sqlite")
[[ $(status_field "$ENC" default encrypted) == True ]] || die "encrypt did not encrypt"
[[ $(export_digest "$ENC") == "$DIGEST_PLAIN" ]] || die "exports differ after encrypt"

# ---------------------------------------------------------------- dek vs VACUUM INTO

timed_vacuum vacuum_enc "$ENC/qg.sqlite"
ENC_BODY_BYTES=$(status_field "$ENC" default bytes)
record enc_body_bytes "$ENC_BODY_BYTES"

timed dek "$RUNS" "fresh_copy '$ENC' '$RUN'" \
    "'$QG_ROTATE_KEYS' --data '$RUN' --ns default dek --batch $BATCH --json"
python3 - "$OUT/crypto-dek.out" "$OBJECTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["objects_rewritten"] == int(sys.argv[2]) and r["from_version"] == 1 and r["to_version"] == 2, r
EOF
[[ $(export_digest "$RUN") == "$DIGEST_PLAIN" ]] || die "exports differ after dek"

# ---------------------------------------------------------------- crypto ceiling

say "openssl speed -evp aes-256-gcm"
openssl speed -mr -seconds 2 -evp aes-256-gcm >"$OUT/crypto-openssl.txt" 2>/dev/null
OPENSSL_VERSION=$(openssl version)
# +H:16:64:256:1024:8192:16384 and +F:n:AES-256-GCM:<bytes/s per size>
read -r OSSL_1K OSSL_16K < <(python3 - "$OUT/crypto-openssl.txt" <<'EOF'
import sys
lines = open(sys.argv[1]).read().split()
sizes = next(l for l in lines if l.startswith("+H:")).split(":")[1:]
rates = next(l for l in lines if l.startswith("+F:")).split(":")[3:]
by = dict(zip(map(int, sizes), map(float, rates)))
print(by[1024] / 1e6, by[16384] / 1e6)
EOF
)
record openssl_1k_mbs "$OSSL_1K"
record openssl_16k_mbs "$OSSL_16K"

# ---------------------------------------------------------------- master on MASTER_NS namespaces

MANY=$WORK/many
say "creating $MASTER_NS encrypted namespaces of $MASTER_QUADS quads each"
"$QG" --data "$MANY" init >/dev/null
head -n "$MASTER_QUADS" "$NQ" >"$WORK/small.nq"
for ((i = 1; i <= MASTER_NS; i++)); do
    "$QG" --data "$MANY" ns create "ns$i" --encrypted >/dev/null
    "$QG" --data "$MANY" --ns "ns$i" commit -m "data" --add "$WORK/small.nq" >/dev/null
done
MANY_DB_BYTES=$(stat -c %s "$MANY/qg.sqlite")
printf '%s\n' "$KEY1" >"$WORK/key1"
printf '%s\n' "$KEY2" >"$WORK/key2"
chmod 600 "$WORK/key1" "$WORK/key2"
# each run is a real rotation: KEY1 -> KEY2, then back; the script remembers the key in use
cat >"$WORK/master-run.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
# rotate the store in \$1 away from the master key it is wrapped with now
data=\$1
cur=\$(cat "\$data/current-key")
if [[ \$cur == key1 ]]; then next=key2; else next=key1; fi
QUADGIT_MASTER_KEY=\$(cat "$WORK/\$cur") "$QG_ROTATE_KEYS" --data "\$data" master --new-key-file "$WORK/\$next"
echo "\$next" >"\$data/current-key"
EOF
chmod +x "$WORK/master-run.sh"
echo key1 >"$MANY/current-key"
timed master_many "$MASTER_RUNS" "" "'$WORK/master-run.sh' '$MANY'"
grep -q "rewrapped the keys of $MASTER_NS namespaces" "$OUT/crypto-master_many.out" ||
    die "master did not rewrap $MASTER_NS namespaces: $(cat "$OUT/crypto-master_many.out")"
for ns in ns1 "ns$MASTER_NS"; do   # the namespaces open with the key now in use
    n=$(QUADGIT_MASTER_KEY=$(cat "$WORK/$(cat "$MANY/current-key")") "$QG" --data "$MANY" --ns "$ns" export | wc -l)
    [[ $n == "$MASTER_QUADS" ]] || die "$ns exports $n quads after the master rotations, expected $MASTER_QUADS"
done

# the same on the one big namespace: time must not depend on data size
fresh_copy "$ENC" "$WORK/big-master"
echo key1 >"$WORK/big-master/current-key"
timed master_big "$MASTER_RUNS" "" "'$WORK/master-run.sh' '$WORK/big-master'"
export QUADGIT_MASTER_KEY=$KEY1

# process floor: start qg, open the store
timed floor "$UNLOCK_RUNS" "" "'$QG' --data '$MANY' ns list"

# ---------------------------------------------------------------- Argon2id unlock at the defaults

UNL=$WORK/unlock
"$QG" --data "$UNL" init >/dev/null
QG_PASSWORD='benchmark password' "$QG" --data "$UNL" ns create locked --password >/dev/null  # default KDF
KDF=$(python3 - "$UNL/qg.sqlite" <<'EOF'
import json, sqlite3, sys
rec = json.loads(sqlite3.connect(sys.argv[1]).execute("SELECT crypto FROM namespaces WHERE name = 'locked'").fetchone()[0])
p = rec["password"]
print(f"m={p['m_kib'] // 1024} MiB, t={p['t']}, p={p['p']}")
EOF
)
timed unlock "$UNLOCK_RUNS" "" "QG_PASSWORD='benchmark password' '$QG' --data '$UNL' ns unlock locked"

# ---------------------------------------------------------------- report

CORES=$(nproc)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
SQLITE_VERSION=$(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')
python3 - "$TIMES" "$RESULT" <<EOF
import sys
t = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
f = lambda k: float(t[k])
quads, objects = $QUADS, int(t["objects"])
body, enc_body = int(t["body_bytes"]), int(t["enc_body_bytes"])
plain_db, enc_db, many_db = $PLAIN_DB_BYTES, $ENC_DB_BYTES, $MANY_DB_BYTES
MB = 1e6
def secs(s): return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
def goal(ok): return "met" if ok else "**missed**"
enc, dek, vp, ve = f("encrypt"), f("dek"), f("vacuum_plain"), f("vacuum_enc")
o1k, o16k = f("openssl_1k_mbs"), f("openssl_16k_mbs")
enc_mbs, dek_mbs = body / MB / enc, enc_body / MB / dek
cpu = lambda k: f(k + "_cpu")
rows = [
    (f"encrypt a plaintext namespace of {quads:,} quads ({objects:,} objects, {body / MB:.1f} MB of bodies; database {plain_db / MB:.1f} MB)",
     f"\`qg-rotate-keys encrypt\` {secs(enc)}, CPU {secs(cpu('encrypt'))} ({enc_mbs:.1f} MB/s of bodies)",
     f"\`VACUUM INTO\` {secs(vp)}, CPU {secs(cpu('vacuum_plain'))} ({plain_db / MB / vp:.0f} MB/s of database)",
     f"{enc / vp:.1f}x VACUUM INTO (CPU {cpu('encrypt') / cpu('vacuum_plain'):.1f}x)", "<= 2x VACUUM INTO", goal(enc <= 2 * vp)),
    (f"rotate the data key of that namespace ({enc_body / MB:.1f} MB of sealed bodies; database {enc_db / MB:.1f} MB)",
     f"\`qg-rotate-keys dek\` {secs(dek)}, CPU {secs(cpu('dek'))} ({dek_mbs:.1f} MB/s of bodies)",
     f"\`VACUUM INTO\` {secs(ve)}, CPU {secs(cpu('vacuum_enc'))} ({enc_db / MB / ve:.0f} MB/s of database)",
     f"{dek / ve:.1f}x VACUUM INTO (CPU {cpu('dek') / cpu('vacuum_enc'):.1f}x)", "<= 2x VACUUM INTO", goal(dek <= 2 * ve)),
    ("crypto ceiling: AES-256-GCM, one core",
     f"encrypt {enc_mbs:.1f} MB/s, dek {dek_mbs:.1f} MB/s of bodies",
     f"\`openssl speed\` {o1k:,.0f} MB/s (1 KiB blocks), {o16k:,.0f} MB/s (16 KiB)",
     f"dek at {100 * dek_mbs / o1k:.2f}% of the 1 KiB ceiling", "(info)", ""),
    (f"rotate the master key of {$MASTER_NS} namespaces with data ({$MASTER_QUADS:,} quads each; database {many_db / MB:.1f} MB; median of {$MASTER_RUNS})",
     f"\`qg-rotate-keys master\` {secs(f('master_many'))}",
     f"process floor (\`qg ns list\`) {secs(f('floor'))}", f"{f('master_many') / f('floor'):.1f}x the floor", "< 1 s", goal(f("master_many") < 1)),
    (f"rotate the master key of the one {quads:,}-quad namespace (median of {$MASTER_RUNS})",
     f"\`qg-rotate-keys master\` {secs(f('master_big'))}", "-",
     f"{f('master_big') / f('master_many'):.2f}x the {$MASTER_NS}-namespace time", "independent of data size", ""),
    (f"unlock a password namespace, Argon2id at the defaults ($KDF; median of {$UNLOCK_RUNS})",
     f"\`qg ns unlock\` {secs(f('unlock'))}, CPU {secs(cpu('unlock'))}", f"process floor (\`qg ns list\`) {secs(f('floor'))}",
     f"Argon2id ~{secs(f('unlock') - f('floor'))} per unlock", "(report)", ""),
]
lines = [
    "| benchmark | qg | peer | ratio | goal | result |",
    "|---|---|---|---|---|---|",
] + ["| " + " | ".join(r) + " |" for r in rows]
import datetime
head = (f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on $CORES cores ($CPU); "
        f"medians of $RUNS runs (encrypt, dek, VACUUM INTO), each on a fresh copy of the store; "
        f"batch $BATCH objects; load average at the start $LOAD. "
        f"Peers: SQLite $SQLITE_VERSION (python3 sqlite3), $OPENSSL_VERSION.")
text = head + "\n\n" + "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
say "written to $RESULT"

#!/usr/bin/env bash
# qg-sbom against cargo-cyclonedx on this workspace, side by side:
#  - coverage: every component cargo-cyclonedx lists must be in our SBOM
#    (matched by name and version); hashes and licenses on each side;
#  - generation time of both (same machine, same warm cargo cache).
#
#   benches/sbom-compare.sh            # 5 timed runs each
#   RUNS=10 benches/sbom-compare.sh
#
# Settings (environment):
#   RUNS=5              timed runs per tool
#   QG_SBOM=path        a prebuilt qg-sbom (default: build it, release)
#   CARGO_CYCLONEDX=path  the cargo-cyclonedx binary (default: on PATH or ~/.cargo/bin)
#
# Needs: cargo, python3, cargo-cyclonedx (`cargo install cargo-cyclonedx --locked`,
# ~2 min on two cores). cargo-cyclonedx writes one SBOM per workspace member
# next to each Cargo.toml, so it runs on a copy of the workspace in a temp
# folder. Exit 1 if cargo-cyclonedx lists a component we do not.
# Outputs: benches/out/sbom-compare.md (and the two SBOMs beside it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
OUT="$ROOT/benches/out"
mkdir -p "$OUT"

CCDX=${CARGO_CYCLONEDX:-$(command -v cargo-cyclonedx || echo "$HOME/.cargo/bin/cargo-cyclonedx")}
if [ ! -x "$CCDX" ]; then
  echo "cargo-cyclonedx is not installed: cargo install cargo-cyclonedx --locked (or set CARGO_CYCLONEDX)" >&2
  exit 2
fi
if [ -z "${QG_SBOM:-}" ]; then
  cargo build --release --locked -q -p qg-sbom --manifest-path "$ROOT/Cargo.toml"
  QG_SBOM="$ROOT/target/release/qg-sbom"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A copy of the workspace sources (no target/, no data), for cargo-cyclonedx to write into.
(cd "$ROOT" && tar --exclude=./target --exclude=./benches/data --exclude=./benches/out --exclude=./.git -cf - .) | (mkdir -p "$WORK/ws" && cd "$WORK/ws" && tar -xf -)

now_ms() { date +%s%3N; }
time_runs() { # name, command...
  local name=$1; shift
  local t0 t1 best=999999999 total=0
  for _ in $(seq "$RUNS"); do
    t0=$(now_ms); "$@" >/dev/null 2>&1; t1=$(now_ms)
    local dt=$((t1 - t0)); total=$((total + dt))
    [ "$dt" -lt "$best" ] && best=$dt
  done
  echo "$name $best $((total / RUNS))"
}

ours() { SOURCE_DATE_EPOCH=1700000000 "$QG_SBOM" generate --manifest-path "$WORK/ws/Cargo.toml" --name quadgit --output "$OUT/sbom-qg-sbom.json"; }
theirs() { "$CCDX" cyclonedx --manifest-path "$WORK/ws/Cargo.toml" --format json --spec-version 1.5 --override-filename ccdx -q; }

# One warm-up run each (cargo metadata cache, page cache), then the timed runs.
ours; theirs
T_OURS=$(time_runs qg-sbom ours)
T_THEIRS=$(time_runs cargo-cyclonedx theirs)

python3 - "$OUT" "$WORK/ws" "$T_OURS" "$T_THEIRS" "$RUNS" <<'EOF'
import glob, json, os, sys
out, ws, t_ours, t_theirs, runs = sys.argv[1:6]
ours = json.load(open(os.path.join(out, "sbom-qg-sbom.json")))
theirs_files = sorted(glob.glob(os.path.join(ws, "**", "ccdx.json"), recursive=True))
assert theirs_files, "cargo-cyclonedx wrote no SBOM"

def flat(components):
    for c in components or []:
        yield c
        yield from flat(c.get("components"))

# cargo-cyclonedx: one SBOM per member; the union of their components.
theirs = {}
for f in theirs_files:
    doc = json.load(open(f))
    for c in flat(doc.get("components")):
        if c.get("type") == "library":
            theirs[(c["name"], c.get("version"))] = c
    # Each member itself is its metadata component.
    mc = doc["metadata"]["component"]
    theirs.setdefault((mc["name"], mc.get("version")), mc)
mine = {(c["name"], c.get("version")): c for c in ours["components"]}

missing = sorted(set(theirs) - set(mine))
extra = sorted(set(mine) - set(theirs))
def cover(d, key):
    return sum(1 for c in d.values() if c.get(key)), len(d)
registry = lambda d: {k: c for k, c in d.items() if "download_url=file" not in (c.get("purl") or "")}
rows = [
    ("components", len(theirs), len(mine)),
    ("with SHA-256 hash (registry crates)", "%d/%d" % cover(registry(theirs), "hashes"), "%d/%d" % cover(registry(mine), "hashes")),
    ("with license", "%d/%d" % cover(theirs, "licenses"), "%d/%d" % cover(mine, "licenses")),
    ("with scope", "%d/%d" % cover(theirs, "scope"), "%d/%d" % cover(mine, "scope")),
]
_, ob, oa = t_ours.split(); _, tb, ta = t_theirs.split()
lines = [
    "# SBOM: qg-sbom vs cargo-cyclonedx (this workspace)",
    "",
    f"Runs per tool: {runs}; times are wall clock for the whole workspace, best and mean.",
    f"cargo-cyclonedx writes {len(theirs_files)} SBOMs (one per member); compared as their union.",
    "",
    "| | cargo-cyclonedx | qg-sbom |",
    "|---|---|---|",
]
lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
lines += [
    f"| generation time, best (ms) | {tb} | {ob} |",
    f"| generation time, mean (ms) | {ta} | {oa} |",
    f"| time ratio qg-sbom / cargo-cyclonedx (mean) | | {int(oa) / max(int(ta), 1):.2f} |",
    "",
    f"In cargo-cyclonedx but not in qg-sbom: {len(missing)} {missing if missing else ''}",
    f"In qg-sbom but not in cargo-cyclonedx: {len(extra)} {extra[:20]}{' ...' if len(extra) > 20 else ''}",
]
text = "\n".join(lines) + "\n"
open(os.path.join(out, "sbom-compare.md"), "w").write(text)
print(text)
sys.exit(1 if missing else 0)
EOF

#!/usr/bin/env bash
# The main job on the embedded default: build `qg`, create a store in a fresh
# directory, load sample data and walk through commits, branches, a merge,
# a diff, queries and the integrity checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cargo build -q -p qg-store --bin qg
qg() { "$here/../target/debug/qg" "$@"; }
export QG_DATA=${QG_DATA:-$(mktemp -d)/qg-data}
export QG_ACTOR=${QG_ACTOR:-demo}
if [ -t 1 ]; then b=$'\033[1m' n=$'\033[0m'; else b= n=; fi
step() { printf '\n%s$ qg %s%s\n' "$b" "$*" "$n"; qg "$@"; }

step init
step commit -m "Load sample people and projects" --add "$here/sample.trig"
step branch carol-joins
printf '<http://example.org/carol> <http://xmlns.com/foaf/0.1/name> "Carol" <http://example.org/people> .\n' \
  | qg commit -m "Carol joins" --branch carol-joins --add - >/dev/null
printf '<http://example.org/alice> <http://xmlns.com/foaf/0.1/age> "35"^^<http://www.w3.org/2001/XMLSchema#integer> <http://example.org/people> .\n' > "$QG_DATA/../age.nq"
printf '<http://example.org/alice> <http://xmlns.com/foaf/0.1/age> "34"^^<http://www.w3.org/2001/XMLSchema#integer> <http://example.org/people> .\n' > "$QG_DATA/../old-age.nq"
qg commit -m "Alice turns 35" --add "$QG_DATA/../age.nq" --remove "$QG_DATA/../old-age.nq" >/dev/null
step diff main carol-joins
step merge carol-joins
step log -n 3
step query '?person <http://xmlns.com/foaf/0.1/name> ?name'
step export --graph http://example.org/projects --format trig
step fsck
step audit verify
printf '\nStore left in %s\n' "$QG_DATA"

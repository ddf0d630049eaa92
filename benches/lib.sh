# Helpers the benchmark scripts share. Source it with ROOT set to the
# repository root:  . "$ROOT/benches/lib.sh"

# say MSG / die MSG: progress and fatal errors on stderr, die naming the script.
say() { printf '== %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# median of numbers given one per line on stdin
median() { python3 -c 'import statistics, sys; print(statistics.median(float(l) for l in sys.stdin if l.strip()))'; }

# release_build CARGO-ARGS...: cargo build --release in the repository; prints
# the directory the binaries land in.
release_build() {
    (cd "$ROOT" && cargo build --release "$@") >&2
    printf '%s\n' "${CARGO_TARGET_DIR:-$ROOT/target}/release"
}

# dataset QUADS GRAPHS SEED: the path of the shared generated data set
# (benches/data/dataset-qQUADS-gGRAPHS-sSEED.nq), generated on first use.
dataset() {
    local nq=$ROOT/benches/data/dataset-q$1-g$2-s$3.nq
    if [[ ! -s $nq ]]; then
        say "generating $nq"
        mkdir -p "$ROOT/benches/data"
        python3 "$ROOT/benches/gen_dataset.py" --quads "$1" --graphs "$2" --seed "$3" >"$nq.tmp.$$"
        mv "$nq.tmp.$$" "$nq"
    fi
    printf '%s\n' "$nq"
}

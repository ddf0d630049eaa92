#!/usr/bin/env python3
"""Change files for the history and diff rows of benches/compare.sh.

    python3 benches/make_edits.py DATASET.nq OUTDIR --seed 1 \
        --one 30 --small 70 --small-size 10 --diff 1000

Reads the data set produced by gen_dataset.py and writes, into OUTDIR:

  one-NNN.nq                 --one files of exactly one new quad each: a new
                             schema:comment on a random existing subject, in
                             that subject's graph (so edits land all over the
                             tree, not at one end of it)
  small-NNN-add.nq / -del.nq --small pairs: size/2 new quads and size/2 quads
                             of the data set to remove
  diff-add.nq / diff-del.nq  --diff/2 new quads and --diff/2 removals: two
                             states exactly --diff quads apart

Every removed quad is a distinct line of the data set and is removed once;
every added quad is new. Deterministic for a given data set and seed.
"""

import argparse
import os
import random

COMMENT = "<http://schema.org/comment>"


def split(line):
    """(subject, graph) of one N-Quads line written by gen_dataset.py."""
    subject = line.split(" ", 1)[0]
    graph = line.rstrip().rsplit(" ", 2)[-2]
    return subject, graph


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--one", type=int, default=30, help="one-quad commits")
    ap.add_argument("--small", type=int, default=70, help="small add+remove commits")
    ap.add_argument("--small-size", type=int, default=10, help="quads changed per small commit")
    ap.add_argument("--diff", type=int, default=1000, help="quads between the two diff states")
    args = ap.parse_args()

    with open(args.dataset, "rb") as f:
        n = sum(1 for _ in f)
    r = random.Random(args.seed)
    half_small = args.small_size // 2
    half_diff = args.diff // 2
    n_anchor = args.one + args.small * (args.small_size - half_small) + (args.diff - half_diff)
    n_remove = args.small * half_small + half_diff
    if n_anchor + n_remove > n:
        ap.error(f"the data set has {n} quads, fewer than the {n_anchor + n_remove} these edits need")
    picked = r.sample(range(n), n_anchor + n_remove)
    anchors_idx = picked[:n_anchor]
    remove_idx = picked[n_anchor:]
    wanted = set(picked)
    lines = {}
    with open(args.dataset, "r", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i in wanted:
                lines[i] = line if line.endswith("\n") else line + "\n"

    counter = [0]

    def new_quad(tag):
        s, g = split(lines[anchors_idx[counter[0]]])
        counter[0] += 1
        return f'{s} {COMMENT} "bench {tag} edit {counter[0]}"@en {g} .\n'

    removals = iter(remove_idx)
    os.makedirs(args.outdir, exist_ok=True)

    def write(name, text):
        with open(os.path.join(args.outdir, name), "w", encoding="utf-8") as f:
            f.write(text)

    for k in range(1, args.one + 1):
        write(f"one-{k:03d}.nq", new_quad("one"))
    for k in range(1, args.small + 1):
        write(f"small-{k:03d}-add.nq", "".join(new_quad("small") for _ in range(args.small_size - half_small)))
        write(f"small-{k:03d}-del.nq", "".join(lines[next(removals)] for _ in range(half_small)))
    write("diff-add.nq", "".join(new_quad("diff") for _ in range(args.diff - half_diff)))
    write("diff-del.nq", "".join(lines[next(removals)] for _ in range(half_diff)))


if __name__ == "__main__":
    main()

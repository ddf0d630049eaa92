#!/usr/bin/env python3
"""Deterministic synthetic N-Quads for QuadGit benchmarks.

    python3 benches/gen_dataset.py --quads 1000000 --graphs 10 --seed 1 > data.nq

Writes exactly --quads distinct quads to stdout. The data looks like a small
knowledge graph: people, organisations, products and places, each described
by a handful of properties spread over --graphs named graphs. Objects are a
realistic mix of IRIs (links between entities, types), plain strings,
language-tagged strings, xsd:integer / xsd:decimal / xsd:date / xsd:boolean
literals, and strings that need N-Triples escaping (quotes, backslashes,
newlines, non-ASCII). There are no blank nodes, so a bulk load and a
`qg commit --add` of the same file produce the same quad set.

The same (--quads, --graphs, --seed) always produces byte-identical output.

Other modes used by benches/compare.sh:

    --entity-offset K   number entities from K (fresh subjects that do not
                        collide with the main data set, for "add" files)
"""

import argparse
import random
import sys

BASE = "http://bench.example.org/"
SDO = "http://schema.org/"
FOAF = "http://xmlns.com/foaf/0.1/"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
XSD = "http://www.w3.org/2001/XMLSchema#"

FIRST = [
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    "Margaret", "Tim", "Radia", "Linus", "Sophie", "Dennis", "Hedy", "John",
    "Katherine", "Leslie", "Niklaus", "Shafi", "Yukihiro", "Zoë", "José", "Łukasz",
]
LAST = [
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen",
    "Thompson", "Hamilton", "Berners-Lee", "Perlman", "Torvalds", "Wilson",
    "Ritchie", "Lamarr", "McCarthy", "Johnson", "Lamport", "Wirth",
    "Goldwasser", "Matsumoto", "Müller", "García", "Nowak",
]
WORDS = [
    "quantum", "ledger", "river", "orbit", "signal", "harbor", "vector", "maple",
    "granite", "cipher", "meadow", "falcon", "lattice", "ember", "tundra",
    "prism", "cobalt", "willow", "summit", "canyon", "delta", "beacon", "nova",
    "atlas", "echo", "fjord", "glacier", "horizon", "iris", "jade",
]
LANGS = ["en", "de", "fr", "es", "it", "nl", "pl", "ja"]
KINDS = ["person", "org", "product", "place"]
CITIES = [
    ("Berlin", "de"), ("Paris", "fr"), ("Madrid", "es"), ("Rome", "it"),
    ("Amsterdam", "nl"), ("Warsaw", "pl"), ("Tokyo", "ja"), ("London", "en"),
]


def esc(s):
    """A string as an N-Triples literal body (ECHAR escapes)."""
    return (
        s.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )


def iri(s):
    return "<" + s + ">"


def lit(s):
    return '"' + esc(s) + '"'


def lang(s, tag):
    return '"' + esc(s) + '"@' + tag


def typed(value, dtype):
    return '"' + value + '"^^<' + XSD + dtype + ">"


def entity(kind, i):
    return iri(f"{BASE}{kind}/{i}")


class Gen:
    def __init__(self, seed, graphs, total_entities):
        self.r = random.Random(seed)
        self.graphs = [iri(f"{BASE}graph/{g}") for g in range(max(graphs, 1))]
        self.total = max(total_entities, 1)

    def other(self, kind):
        """A link to some entity of `kind` among the whole data set (may be forward)."""
        return entity(kind, self.r.randrange(self.total) // 4 * 4 + KINDS.index(kind))

    def words(self, n):
        return " ".join(self.r.choice(WORDS) for _ in range(n))

    def statements(self, i):
        """(predicate, object) pairs describing entity number i; predicates may repeat, objects differ."""
        r = self.r
        kind = KINDS[i % 4]
        out = []
        if kind == "person":
            first, last = r.choice(FIRST), r.choice(LAST)
            out += [
                (RDF_TYPE, iri(SDO + "Person")),
                (FOAF + "name", lit(f"{first} {last}")),
                (SDO + "givenName", lit(first)),
                (SDO + "familyName", lit(last)),
                (SDO + "birthDate", typed(f"{r.randint(1930, 2005)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}", "date")),
                (SDO + "worksFor", self.other("org")),
                (SDO + "email", lit(f"{first.lower()}.{i}@example.org")),
            ]
            for _ in range(r.randint(0, 4)):
                out.append((FOAF + "knows", self.other("person")))
            if r.random() < 0.2:
                out.append((SDO + "description", lit(f'Says "{self.words(3)}"\n\tand {self.words(2)} \\ more')))
        elif kind == "org":
            name = self.words(2).title()
            out += [
                (RDF_TYPE, iri(SDO + "Organization")),
                (RDFS_LABEL, lit(name + " GmbH")),
                (SDO + "numberOfEmployees", typed(str(r.randint(1, 250000)), "integer")),
                (SDO + "foundingDate", typed(f"{r.randint(1850, 2024)}-01-01", "date")),
                (SDO + "location", self.other("place")),
            ]
            for tag in r.sample(LANGS, r.randint(1, 3)):
                out.append((SDO + "slogan", lang(f"{self.words(4)} ({tag})", tag)))
        elif kind == "product":
            out += [
                (RDF_TYPE, iri(SDO + "Product")),
                (SDO + "name", lit(self.words(3))),
                (SDO + "sku", lit(f"SKU-{i:09d}")),
                (SDO + "price", typed(f"{r.randint(1, 99999) / 100:.2f}", "decimal")),
                (SDO + "inStock", typed(r.choice(["true", "false"]), "boolean")),
                (SDO + "manufacturer", self.other("org")),
                (SDO + "weight", typed(str(r.randint(1, 50000)), "integer")),
            ]
            if r.random() < 0.5:
                out.append((SDO + "description", lang(self.words(8), r.choice(LANGS))))
        else:
            city, tag = r.choice(CITIES)
            out += [
                (RDF_TYPE, iri(SDO + "Place")),
                (RDFS_LABEL, lang(f"{city} {self.words(1)}", tag)),
                (RDFS_LABEL, lit(f"{city} / {i}")),
                (SDO + "latitude", typed(f"{r.uniform(-90, 90):.6f}", "decimal")),
                (SDO + "longitude", typed(f"{r.uniform(-180, 180):.6f}", "decimal")),
                (SDO + "population", typed(str(r.randint(100, 20000000)), "integer")),
            ]
        # de-duplicate (repeated foaf:knows targets) keeping order
        seen = set()
        uniq = []
        for po in out:
            if po not in seen:
                seen.add(po)
                uniq.append(po)
        return uniq

    def graph_of(self, i):
        # entities cluster in graphs (as datasets usually do), with a tail elsewhere
        if self.r.random() < 0.9:
            return self.graphs[(i // 1000) % len(self.graphs)]
        return self.r.choice(self.graphs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quads", type=int, required=True, help="number of distinct quads to write")
    ap.add_argument("--graphs", type=int, default=10, help="number of named graphs (default 10)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--entity-offset", type=int, default=0, help="number the first entity K (default 0)")
    args = ap.parse_args()
    if args.quads < 0:
        ap.error("--quads must be >= 0")

    # about 7 statements per entity
    gen = Gen(args.seed, args.graphs, args.quads // 7 + 1)
    out = sys.stdout
    buf = []
    written = 0
    i = args.entity_offset
    while written < args.quads:
        subject = entity(KINDS[i % 4], i)
        g = gen.graph_of(i)
        for p, o in gen.statements(i):
            if written == args.quads:
                break
            buf.append(f"{subject} <{p}> {o} {g} .\n")
            written += 1
        i += 1
        if len(buf) >= 8192:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))
    out.flush()


if __name__ == "__main__":
    main()

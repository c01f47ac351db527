#!/usr/bin/env python3
"""A Zipf-like query mix for dnsperf: the realistic repeated workload of
`bench/run.py --cached` (issue 13, point 5).

Real DNS traffic asks a few names very often and many names rarely; its
popularity is close to Zipf's law (the k-th most popular name is asked with
a probability proportional to 1/k^s, s about 1).  This module draws such a
mix over NAMES names `hN.example.com A` (N = 0..NAMES-1), which both backend
kinds of the benchmarks answer (mname-demo-backend and
tests/interop/backend.js: A 10.(N>>16).((N>>8)&255).(N&255), TTL 60).

Which N is the k-th most popular is a fixed random permutation, so popular
names are not a contiguous range.  Everything is drawn from a seeded
generator: the same arguments give the same file, byte for byte.

dnsperf reads its file in order and starts again at the end, so the file is
long (1,000,000 lines by default, about 19 MB): a run loops over it at most
a few times, and a loop over a Zipf sample is still a Zipf mix.  Files are
written to a temporary directory by the benchmarks, never committed.

    bench/zipf.py --out /tmp/q.txt                   # 1,000,000 lines, s = 1.0, seed 1
    bench/zipf.py --out /tmp/q.txt --lines 100000 --s 0.9 --seed 7

Standard library only.
"""

import argparse
import itertools
import random
import sys

NAMES = 10_000
ZONE = "example.com"
DEFAULT_S = 1.0
DEFAULT_LINES = 1_000_000
DEFAULT_SEED = 1


def name(n):
    """The query name for index n."""
    return f"h{n}.{ZONE}"


def draw(count, names=NAMES, s=DEFAULT_S, seed=DEFAULT_SEED):
    """`count` name indices (0..names-1), Zipf-distributed with exponent s."""
    rng = random.Random(seed)
    # popularity rank k (0-based) -> name index, a fixed permutation
    perm = list(range(names))
    rng.shuffle(perm)
    cum = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(names)))
    ranks = rng.choices(range(names), cum_weights=cum, k=count)
    return [perm[k] for k in ranks]


def write(path, count=DEFAULT_LINES, names=NAMES, s=DEFAULT_S, seed=DEFAULT_SEED):
    """Write a dnsperf query file of `count` lines; return describe() of it."""
    idx = draw(count, names, s, seed)
    with open(path, "w") as f:
        for i in range(0, count, 65536):
            f.write("".join(f"{name(n)} A\n" for n in idx[i:i + 65536]))
    return describe(idx, names, s, seed)


def describe(idx, names, s, seed):
    """What the mix looks like: distinct names, and the share of the queries
    that ask the most popular 1, 10, 100 and 1,000 names."""
    counts = {}
    for n in idx:
        counts[n] = counts.get(n, 0) + 1
    top = sorted(counts.values(), reverse=True)
    total = len(idx)

    def share(k):
        return sum(top[:k]) / total if total else 0.0
    return {
        "lines": total, "names": names, "s": s, "seed": seed,
        "distinct": len(counts),
        # a query repeats if its name was asked before in the file
        "repeat_share": (total - len(counts)) / total if total else 0.0,
        "top1_share": share(1), "top10_share": share(10),
        "top100_share": share(100), "top1000_share": share(1000),
    }


def describe_text(d):
    return (f"{d['lines']:,} queries over {d['names']:,} names hN.{ZONE} A, Zipf s = {d['s']:g} "
            f"(seed {d['seed']}): {d['distinct']:,} distinct names asked, {100 * d['repeat_share']:.1f} % "
            f"of queries repeat a name asked before; the top 1 / 10 / 100 / 1,000 names take "
            f"{100 * d['top1_share']:.1f} / {100 * d['top10_share']:.1f} / {100 * d['top100_share']:.1f} / "
            f"{100 * d['top1000_share']:.1f} % of the queries")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="query file to write")
    ap.add_argument("--lines", type=int, default=DEFAULT_LINES)
    ap.add_argument("--names", type=int, default=NAMES, help="distinct names (at most 100,000)")
    ap.add_argument("--s", type=float, default=DEFAULT_S, help="Zipf exponent")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args()
    if not 1 <= args.names <= 100_000 or args.lines < 1 or args.s < 0:
        ap.error("--names must be 1..100000, --lines at least 1, --s not negative")
    print(describe_text(write(args.out, args.lines, args.names, args.s, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

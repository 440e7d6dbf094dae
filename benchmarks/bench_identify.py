"""Benchmark identification (ID / IDC): time to decide and build the estimand.

Random ADMGs (n nodes, mean degree 3, bidirected edges either with probability 0.1
per node pair or one per ten directed edges; queries first-to-last, a random
ancestor pair, and 10% of the nodes jointly treated / jointly outcome) and
scalable families (front-door chain, bow arc with a tail, Verma chain, ladder of
napkins).  Timings include building and printing the estimand.  y0 is timed in
the same run when it is importable (``PYTHONPATH=/path/to/y0``), with a per-call
time limit; sizes beyond a y0 timeout are skipped for that family.

Usage::

    python benchmarks/bench_identify.py            # full sizes (a few minutes)
    python benchmarks/bench_identify.py --quick    # n <= 100
    python benchmarks/bench_identify.py --out benchmarks/RESULTS_identify.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyro_causalgen.graph import ADMG  # noqa: E402
from pyro_causalgen.identify import CausalQuery, identify  # noqa: E402

SIZES = [10, 20, 50, 100, 200, 500, 1000]
QUICK_SIZES = [10, 20, 50, 100]

try:  # optional comparison
    from y0.algorithm.identify import identify_outcomes as _y0_identify
    from y0.dsl import Variable as _Y0Var
    from y0.graph import NxMixedGraph as _Y0Graph

    HAVE_Y0 = True
except Exception:  # noqa: BLE001
    HAVE_Y0 = False


# ------------------------------------------------------------------ graphs
def random_admg(n: int, bidirected: str, rng: random.Random) -> ADMG:
    names = [f"V{i}" for i in range(n)]
    m = int(round(1.5 * n))  # mean degree 3
    pairs: set[tuple[int, int]] = set()
    max_pairs = n * (n - 1) // 2
    while len(pairs) < min(m, max_pairs):
        a, b = sorted(rng.sample(range(n), 2))
        pairs.add((a, b))
    directed = [(names[a], names[b]) for a, b in sorted(pairs)]
    bid: list[tuple[str, str]] = []
    if bidirected == "p0.1":
        for i in range(n):
            for j in range(i + 1, n):
                if rng.random() < 0.1:
                    bid.append((names[i], names[j]))
    else:
        k = max(1, len(directed) // 10)
        seen: set[tuple[int, int]] = set()
        while len(seen) < k:
            a, b = sorted(rng.sample(range(n), 2))
            seen.add((a, b))
        bid = [(names[a], names[b]) for a, b in sorted(seen)]
    return ADMG(directed, bid, names)


def random_queries(g: ADMG, rng: random.Random) -> dict[str, CausalQuery]:
    order = g.topological_order()
    out = {"first-last": CausalQuery([order[-1]], [order[0]])}
    for _ in range(100):
        y = rng.choice(order)
        anc = sorted(g.ancestors(y, include_self=False))
        if anc:
            out["ancestor-pair"] = CausalQuery([y], [rng.choice(anc)])
            break
    else:
        out["ancestor-pair"] = CausalQuery([order[-1]], [order[0]])
    k = max(1, len(order) // 10)
    pick = rng.sample(list(order), 2 * k)
    out["10%-joint"] = CausalQuery(pick[:k], pick[k:])
    return out


def front_door_chain(n: int) -> tuple[ADMG, CausalQuery]:
    names = ["X"] + [f"M{i}" for i in range(1, n - 1)] + ["Y"]
    return ADMG(list(zip(names, names[1:])), [("X", "Y")]), CausalQuery(["Y"], ["X"])


def bow_tail(n: int) -> tuple[ADMG, CausalQuery]:
    names = ["X", "Y"] + [f"W{i}" for i in range(1, n - 1)]
    g = ADMG(list(zip(names, names[1:])), [("X", "Y")])
    return g, CausalQuery([names[-1]], ["X"])


def verma_chain(n: int) -> tuple[ADMG, CausalQuery]:
    names = [f"V{i}" for i in range(1, n + 1)]
    g = ADMG(list(zip(names, names[1:])), list(zip(names, names[2:])))
    return g, CausalQuery([names[-1]], [names[0]])


def napkin_ladder(n: int) -> tuple[ADMG, CausalQuery]:
    k = max(1, n // 4)
    d, b = [], []
    for i in range(k):
        w, z, x, y = f"W{i}", f"Z{i}", f"X{i}", f"Y{i}"
        d += [(w, z), (z, x), (x, y)]
        b += [(w, x), (w, y)]
        if i:
            d.append((f"Y{i - 1}", w))
    g = ADMG(d, b)
    return g, CausalQuery([f"Y{k - 1}"], [f"X{i}" for i in range(k)])


FAMILIES: dict[str, Callable[[int], tuple[ADMG, CausalQuery]]] = {
    "front-door chain": front_door_chain,
    "bow arc + tail": bow_tail,
    "Verma chain": verma_chain,
    "napkin ladder": napkin_ladder,
}


# ------------------------------------------------------------------ timing
def time_ours(g: ADMG, q: CausalQuery, budget: float = 0.3) -> tuple[float, bool]:
    times = []
    ident = False
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 15):
        t0 = time.perf_counter()
        r = identify(g, q)
        if r.estimand is not None:
            r.estimand.to_text()
        times.append(time.perf_counter() - t0)
        ident = r.identifiable
        if times[-1] > 2.0:
            break
    return statistics.median(times), ident


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout


def time_y0(g: ADMG, q: CausalQuery, limit: float) -> float | None:
    """Seconds for y0 (one call), or ``None`` on timeout."""
    try:
        yg = _Y0Graph.from_str_edges(
            nodes=list(g.nodes),
            directed=list(g.directed_edges),
            undirected=list(g.bidirected_edges),
        )
    except Exception:  # noqa: BLE001
        return float("nan")
    outs = {_Y0Var(v) for v in q.outcomes}
    treats = {_Y0Var(v) for v in q.treatments}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        t0 = time.perf_counter()
        res = _y0_identify(yg, treats, outs)
        if res is not None:
            str(res)
        return time.perf_counter() - t0
    except _Timeout:
        return None
    except Exception:  # noqa: BLE001 - a crash of y0 is reported, not fatal
        return float("nan")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fmt(t: float | None, limit: float) -> str:
    if t is None:
        return f"> {limit:g} s"
    if t != t:
        return "error"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes up to 100 only")
    ap.add_argument("--no-y0", action="store_true", help="skip the y0 comparison")
    ap.add_argument("--y0-limit", type=float, default=20.0, help="seconds per y0 call")
    ap.add_argument("--seeds", type=int, default=5, help="random graphs per size")
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    sizes = QUICK_SIZES if args.quick else SIZES
    use_y0 = HAVE_Y0 and not args.no_y0
    lines = []
    head = "| workload | n | identifiable | ours (median) | y0 | speed-up |"
    lines += [head, "|---|---:|---|---:|---:|---:|"]

    def row(name, n, ident, ours, theirs):
        if use_y0:
            sp = (
                f"{theirs / ours:.0f}x"
                if theirs and theirs == theirs
                else (f"> {args.y0_limit / ours:.0f}x" if theirs is None else "-")
            )
            ytxt = fmt(theirs, args.y0_limit)
        else:
            sp, ytxt = "-", "not installed"
        line = f"| {name} | {n} | {ident} | {fmt(ours, 0)} | {ytxt} | {sp} |"
        lines.append(line)
        print(line, flush=True)

    print(head, flush=True)
    # scalable families
    for fam, build in FAMILIES.items():
        y0_dead = False
        for n in sizes:
            g, q = build(n)
            ours, ident = time_ours(g, q)
            theirs = None
            if use_y0 and not y0_dead:
                theirs = time_y0(g, q, args.y0_limit)
                y0_dead = theirs is None
            elif use_y0:
                theirs = None
            row(fam, n, "yes" if ident else "no (hedge)", ours, theirs)
    # random graphs
    summary: dict[tuple[str, str, int], list[float]] = {}
    for bmode in ("p0.1", "1/10"):
        for qname in ("first-last", "ancestor-pair", "10%-joint"):
            y0_dead = False
            for n in sizes:
                ours_t, y0_t, idents = [], [], []
                for seed in range(args.seeds):
                    rng = random.Random(1000 * n + seed)
                    g = random_admg(n, bmode, rng)
                    q = random_queries(g, rng)[qname]
                    t, ident = time_ours(g, q, budget=0.05)
                    ours_t.append(t)
                    idents.append(ident)
                    if use_y0 and not y0_dead:
                        yt = time_y0(g, q, args.y0_limit)
                        if yt is None:
                            y0_dead = True
                        else:
                            y0_t.append(yt)
                med = statistics.median(ours_t)
                summary[(bmode, qname, n)] = ours_t
                theirs = statistics.median(y0_t) if y0_t and not y0_dead else None
                name = f"random ({bmode} bidirected), {qname}"
                row(name, n, f"{sum(idents)}/{len(idents)}", med, theirs)
    text = "\n".join(lines)
    if args.out:
        cmd = "python benchmarks/bench_identify.py " + " ".join(argv or sys.argv[1:])
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("# Identification benchmark\n\n")
            fh.write(f"Command: `{cmd.strip()}`\n\n")
            fh.write(
                f"Machine: {platform.platform()}, Python {platform.python_version()}, "
                f"{os.cpu_count()} CPU cores. y0: "
                f"{'0.2.11 (same run)' if use_y0 else 'not installed'}.\n\n"
            )
            fh.write(
                "Times are medians of repeated calls to `identify` (estimand built and "
                "printed); random rows are medians over seeds.  y0 is called once per "
                f"graph with a {args.y0_limit:g} s limit; after a timeout larger sizes "
                "of that row are skipped.\n\n"
            )
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Timing helpers shared by the benchmarks: interleaved repetitions, medians, tables.

Machines are noisy (other jobs share the cores), so every ratio is taken from
contenders timed in the same run, their repetitions interleaved (A B C A B C ...), and
summarised by medians.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def timeit(fn: Callable[[], object], repeat: int = 1) -> float:
    """Wall-clock seconds of ``repeat`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - start


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    reps: int,
    repeat: int = 1,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Time each contender ``reps`` times, interleaved; seconds per call.

    :param contenders: name -> zero-argument callable (one unit of work).
    :param reps: timed repetitions per contender.
    :param repeat: calls per timed repetition.
    :param warmup: untimed calls per contender first.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            times[name].append(timeit(fn, repeat) / repeat)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio_spread(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median ratio of paired repetitions ``num[i] / den[i]`` and its 25-75% range."""
    r = sorted(a / b for a, b in zip(num, den))
    q = statistics.quantiles(r, n=4) if len(r) >= 2 else [r[0], r[0], r[0]]
    return statistics.median(r), q[0], q[2]


def machine() -> str:
    """A one-line description of the machine and library versions."""
    import os

    cores = os.cpu_count()
    return (
        f"{platform.processor() or platform.machine()}, {cores} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}"
    )


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

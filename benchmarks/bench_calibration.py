"""Calibration of effect intervals: how often does the 90% interval cover the truth?

For each of ``--seeds`` datasets drawn from an SCM with a known effect, fit the
uncertainty method, form the 90% interval of the effect and count coverage.

SCMs: ``linear`` (x ~ N(0,1), y = 1.5 x + N(0,1); ATE of x: 1 vs 0 is 1.5, locscale
mechanisms) and ``triangle`` (the shipped nonlinear SCM; E[y | do(x=1)] =
0.5 + sin(1)^2 + 0.25, NSF mechanisms) and ``triangle-cf`` (same fits; a
counterfactual quantity: the mean of y_{x=1} - y over the tenth of the rows with the
smallest |x|, whose truth comes from their exact noise).

Usage: ``python benchmarks/bench_calibration.py [--seeds 20] [--cases linear,triangle]
[--methods bootstrap,ensemble,bayesian] [--members 10] [--threads 1] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from pyro_causalgen import StructuralCausalModel, counterfactual, fit
from pyro_causalgen.analysis import (
    average_treatment_effect,
    effect_over_members,
    fit_ensemble,
    interventional_mean,
)
from pyro_causalgen.analysis.bayesian import fit_bayesian
from pyro_causalgen.analysis.effects import MonteCarloEstimate
from pyro_causalgen.datasets import TRIANGLE_GRAPH, sample_triangle, triangle_effect
from pyro_causalgen.datasets.triangle import triangle_mechanisms, triangle_noise


def linear_case(seed: int, rows: int):
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(rows, generator=g)
    data = {"x": x, "y": 1.5 * x + torch.randn(rows, generator=g)}
    build = lambda: StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
    estimate = lambda m: average_treatment_effect(m, "y", "x", 1.0, 0.0, n=200)
    fit_kw = {"epochs": 80, "lr": 0.05, "patience": None}
    return data, build, estimate, 1.5, fit_kw


def triangle_case(seed: int, rows: int):
    data = {k: v.float() for k, v in sample_triangle(rows, seed=2000 + seed).items()}
    build = lambda: StructuralCausalModel(
        TRIANGLE_GRAPH, mechanism_kwargs={"hidden_features": (16, 16), "transforms": 2}
    )
    estimate = lambda m: interventional_mean(m, "y", {"x": 1.0}, n=20_000)
    fit_kw = {"epochs": 30, "lr": 5e-3, "patience": 5, "batch_size": 128}
    return data, build, estimate, triangle_effect("x", 1.0), fit_kw


def triangle_cf_case(seed: int, rows: int):
    """A counterfactual quantity: the mean of y_{x=1} - y over the observed units
    with the lowest |x| (a tenth of the rows), truth from their exact noise."""
    data, build, _, _, fit_kw = triangle_case(seed, rows)
    units = data["x"].abs().argsort()[: rows // 10]
    observed = {k: v[units] for k, v in data.items()}
    exact = triangle_mechanisms(triangle_noise(observed), {"x": 1.0})
    truth = (exact["y"] - observed["y"]).double().mean().item()

    def estimate(m):
        out = counterfactual(m, observed, {"x": 1.0}, n=len(units))
        diff = (out["counterfactual"]["y"] - out["factual"]["y"]).detach()
        return MonteCarloEstimate(diff.double().mean().item(), 0.0, diff.numel())

    return data, build, estimate, truth, fit_kw


CASES = {
    "linear": linear_case,
    "triangle": triangle_case,
    "triangle-cf": triangle_cf_case,
}


def interval_for(method, data, build, estimate, fit_kw, seed, members, bayes_kw):
    if method in ("bootstrap", "ensemble"):
        ens = fit_ensemble(  # sequential fits and t intervals, as recorded
            build, data, members, method, seed=seed, batched=False, **fit_kw
        )
        return effect_over_members(ens, estimate, "effect").interval(0.9, kind="t")
    model = build()
    fit(model, data, seed=seed, **fit_kw)
    bayes, _ = fit_bayesian(model, data, lr=0.01, seed=seed, **bayes_kw)
    eff = effect_over_members(
        bayes.posterior_models(members), estimate, "effect", "bayesian"
    )
    draws = eff.draws.sort().values  # posterior: equal-tailed 90% interval
    lo = draws[int(math.floor(0.05 * (len(draws) - 1)))].item()
    hi = draws[int(math.ceil(0.95 * (len(draws) - 1)))].item()
    return lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--cases", default="linear")
    parser.add_argument("--methods", default="bootstrap,ensemble,bayesian")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--bayes-steps", type=int, default=600, help="SVI steps")
    parser.add_argument(
        "--prior-scale",
        type=lambda v: v if v == "evidence" else float(v),
        default=1.0,
        help="weight prior sd, or 'evidence' (with --bayes-guide laplace)",
    )
    parser.add_argument(
        "--bayes-random", default="all", choices=["all", "last"], help="random weights"
    )
    parser.add_argument(
        "--bayes-guide",
        default="normal",
        choices=["normal", "lowrank", "mvn", "laplace"],
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.members = 2, 3
    torch.manual_seed(0)
    print(f"# Calibration of 90% effect intervals ({args.seeds} seeds)\n")
    print(
        f"torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, {args.rows} rows per dataset, "
        f"{args.members} members / posterior draws\n"
    )
    # a calibrated 90% interval centred on an unbiased estimate has a width of about
    # 2 x 1.645 x its error: compare the mean width with the RMSE of the centre
    print("| SCM | method | coverage | mean width | RMSE of centre | seconds |")
    print("|---|---|---|---|---|---|")
    bayes_kw = {
        "steps": args.bayes_steps,
        "prior_scale": args.prior_scale,
        "random": args.bayes_random,
        "guide": args.bayes_guide,
    }
    for case in args.cases.split(","):
        for method in args.methods.split(","):
            covered, widths, errors, start = 0, [], [], time.perf_counter()
            for seed in range(args.seeds):
                data, build, estimate, truth, fit_kw = CASES[case](seed, args.rows)
                lo, hi = interval_for(
                    method, data, build, estimate, fit_kw, seed, args.members, bayes_kw
                )
                covered += lo <= truth <= hi
                widths.append(hi - lo)
                errors.append(((lo + hi) / 2 - truth) ** 2)
            secs = time.perf_counter() - start
            print(
                f"| {case} | {method} | {covered}/{args.seeds} | "
                f"{sum(widths) / len(widths):.3f} | "
                f"{math.sqrt(sum(errors) / len(errors)):.3f} | {secs:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

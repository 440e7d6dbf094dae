"""Calibration on ACIC 2016 (per-unit truth) and the speed of a batched ensemble + DR.

Usage::

    python benchmarks/bench_acic.py                 # both parts, all 10 DGPs
    python benchmarks/bench_acic.py --part speed
    python benchmarks/bench_acic.py --part acic --dgps 1 2 --members 20

ACIC 2016 as shipped by causallib (``causallib.datasets.load_acic16``): one realisation
of each of 10 data-generating processes, 4,802 units, 79 covariates (real, from the
IHDP-like study), simulated binary treatment and outcome, both potential outcomes per
unit. Per DGP, in one run, against the sample truth (SATE = mean of po1 - po0 over
units; PEHE over units):

- ours: a :class:`~pyro_causalgen.scm.StructuralCausalModel` ``x -> t``, ``x -> y``,
  ``t -> y`` (``x`` one 79-vector site, location-scale; ``t`` Bernoulli with a
  linear logits; ``y`` an NSF with an affine step), fitted as a batched
  bootstrap ensemble of ``--members`` members; plug-in ATE (members' mean of
  ``mu_1 - mu_0`` over the rows) with the percentile interval over members, and the
  doubly robust answer (``ask(..., method="dr")``, out-of-bag nuisances) with its
  influence-function interval; per-unit effects ``mu_1(x) - mu_0(x)`` for PEHE;
- a gradient-boosting T-learner (scikit-learn defaults, one model per arm);
- linear regression ``y ~ t + x`` (OLS; normal interval from the OLS standard error).

Coverage is over the 10 DGPs, one realisation each (causallib ships one per DGP), so
it is a count out of 10, not a rate with small error.

Speed: a 20-member batched ensemble plus one DR answer on 5,000 rows and 60
covariates with ``torch.set_num_threads(1)``; and the wall time of one member fitted
alone with the same options in the same run (the ratio).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pyro_causalgen.analysis import ask, fit_ensemble
from pyro_causalgen.analysis.doubly_robust import (
    estimate_nuisances,
    normal_quantile,
)
from pyro_causalgen.infer import fit
from pyro_causalgen.scm import StructuralCausalModel

HERE = Path(__file__).parent
ATE = "E[y | do(t=1)] - E[y | do(t=0)]"


def build(d: int) -> StructuralCausalModel:
    return StructuralCausalModel(
        {"x": [], "t": ["x"], "y": ["x", "t"]},
        shapes={"x": (d,)},
        mechanism={"x": "locscale", "t": "bernoulli", "y": "nsf"},
        mechanism_kwargs={
            "t": {"hidden_features": ()},
            "y": {"affine": True, "hidden_features": (64, 64), "transforms": 2},
        },
    )


FIT = {"epochs": 15, "lr": 3e-3, "batch_size": 256, "patience": None}


def ours(x: np.ndarray, t: np.ndarray, y: np.ndarray, members: int, seed: int):
    """Plug-in and DR answers (both levels) and per-unit effects of our model."""
    rows = {
        "x": torch.tensor(x, dtype=torch.float32),
        "t": torch.tensor(t, dtype=torch.float32),
        "y": torch.tensor(y, dtype=torch.float32),
    }
    start = time.perf_counter()
    ens = fit_ensemble(lambda: build(x.shape[1]), rows, members, seed=seed, **FIT)
    fit_s = time.perf_counter() - start
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = {p: ask(ens, ATE, prob=p, method="dr") for p in (0.9, 0.95)}
    positivity = [str(w.message) for w in caught if "propensities" in str(w.message)]
    dr = out[0.9].doubly_robust
    plug_members, cate = [], 0.0
    for member in ens.members:  # each member's own plug-in over all rows
        nu = estimate_nuisances(
            [member], rows, "t", ["x"], [0.0, 1.0], lambda v: v["y"], 4
        )
        m = nu.outcome.mean(0)
        plug_members.append((m[1] - m[0]).mean().item())
        cate = cate + (m[1] - m[0]) / len(ens.members)
    draws = torch.tensor(plug_members, dtype=torch.float64)
    intervals = {}
    for p in (0.9, 0.95):
        q = torch.tensor([(1 - p) / 2, (1 + p) / 2], dtype=torch.float64)
        intervals[p] = torch.quantile(draws, q).tolist()
    return {
        "plugin": draws.mean().item(),
        "plugin_int": intervals,
        "dr": dr.estimate,
        "dr_int": {p: out[p].interval for p in out},
        "cate": cate.numpy(),  # bagged over members, in sample like the peers
        "fit_s": fit_s,
        "held_out": dr.held_out_rows,
        "positivity": positivity[:1],
        "total_s": time.perf_counter() - start,
    }


def t_learner(x, t, y, seed):
    from sklearn.ensemble import GradientBoostingRegressor

    m1 = GradientBoostingRegressor(random_state=seed).fit(x[t == 1], y[t == 1])
    m0 = GradientBoostingRegressor(random_state=seed).fit(x[t == 0], y[t == 0])
    return m1.predict(x) - m0.predict(x)


def linear(x, t, y):
    design = np.column_stack([np.ones(len(t)), t, x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = len(y) - np.linalg.matrix_rank(design)
    sigma2 = resid @ resid / dof
    cov = sigma2 * np.linalg.pinv(design.T @ design)
    return coef[1], math.sqrt(cov[1, 1])


def acic(dgps: list[int], members: int, seed: int) -> list[str]:
    from causallib.datasets import load_acic16

    header = (
        "| DGP | SATE | ours plug-in | ours DR | T-learner | linear | "
        "sqrt(PEHE) ours / T / lin | plug-in 90% / 95% | DR 90% / 95% | "
        "linear 90% / 95% | fit s |"
    )
    lines = [header, "|" + "---|" * 11]
    cover = {k: 0 for k in ("p90", "p95", "d90", "d95", "l90", "l95")}
    wins_pehe = wins_dr = 0
    notes = []
    for dgp in dgps:
        data = load_acic16(dgp)
        x = data.X.to_numpy(dtype=np.float64)
        t = data.a.to_numpy(dtype=np.float64)
        y = data.y.to_numpy(dtype=np.float64)
        tau = (data.po.iloc[:, 1] - data.po.iloc[:, 0]).to_numpy()
        sate = tau.mean()
        res = ours(x, t, y, members, seed + dgp)
        tl = t_learner(x, t, y, seed)
        lin, lin_se = linear(x, t, y)
        pehe = {
            "ours": math.sqrt(np.mean((res["cate"] - tau) ** 2)),
            "T": math.sqrt(np.mean((tl - tau) ** 2)),
            "lin": math.sqrt(np.mean((lin - tau) ** 2)),
        }
        err = {
            "plugin": abs(res["plugin"] - sate),
            "dr": abs(res["dr"] - sate),
            "T": abs(tl.mean() - sate),
            "lin": abs(lin - sate),
        }
        wins_pehe += pehe["ours"] <= pehe["T"]
        wins_dr += err["dr"] <= min(err["T"], err["lin"])

        marks = {}
        for p, tag in ((0.9, "90"), (0.95, "95")):
            z = normal_quantile(0.5 + p / 2)
            lin_iv = (lin - z * lin_se, lin + z * lin_se)
            for key, iv in (
                ("p", res["plugin_int"][p]),
                ("d", res["dr_int"][p]),
                ("l", lin_iv),
            ):
                ok = iv[0] <= sate <= iv[1]
                cover[key + tag] += ok
                marks[key + tag] = "yes" if ok else "no"
        lines.append(
            f"| {dgp} | {sate:.3f} | {res['plugin']:.3f} (err {err['plugin']:.3f}) "
            f"| {res['dr']:.3f} (err {err['dr']:.3f}) | {tl.mean():.3f} "
            f"(err {err['T']:.3f}) | {lin:.3f} (err {err['lin']:.3f}) | "
            f"{pehe['ours']:.3f} / {pehe['T']:.3f} / {pehe['lin']:.3f} | "
            f"{marks['p90']} / {marks['p95']} | {marks['d90']} / {marks['d95']} | "
            f"{marks['l90']} / {marks['l95']} | {res['fit_s']:.0f} |"
        )
        if res["positivity"]:
            notes.append(f"- DGP {dgp}: {res['positivity'][0]}")
        print(lines[-1], flush=True)
    n = len(dgps)
    lines += [
        "",
        f"Coverage of the SATE over {n} DGPs (one realisation each): plug-in "
        f"{cover['p90']}/{n} (90%), {cover['p95']}/{n} (95%); DR {cover['d90']}/{n} "
        f"(90%), {cover['d95']}/{n} (95%); linear {cover['l90']}/{n} (90%), "
        f"{cover['l95']}/{n} (95%).",
        f"sqrt(PEHE) no worse than the T-learner on {wins_pehe}/{n} DGPs; DR ATE "
        f"error no worse than the best peer's on {wins_dr}/{n}.",
    ]
    if notes:
        lines += ["", "Positivity warnings (first per DGP):", *notes]
    return lines


def speed(members: int, seed: int) -> list[str]:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    n, d = 5000, 60
    x = torch.randn(n, d, generator=g)
    logit = x[:, :5].sum(1) / 2
    t = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    y = x[:, :10].sum(1) + t * (1 + x[:, 0]) + torch.randn(n, generator=g)
    rows = {"x": x, "t": t, "y": y}
    opts = {**FIT, "epochs": 20, "patience": None}
    start = time.perf_counter()
    one = build(d)
    torch.manual_seed(seed)
    fit(one, rows, seed=seed, **opts)
    single = time.perf_counter() - start
    start = time.perf_counter()
    ens = fit_ensemble(lambda: build(d), rows, members, seed=seed, **opts)
    fitted = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ans = ask(ens, ATE, method="dr")
    total = time.perf_counter() - start
    truth = 1 + x[:, 0].mean().item()
    return [
        f"- 5,000 rows x 60 covariates, 20 epochs (no early stop), one CPU thread "
        f"(`torch.set_num_threads(1)`): one member alone {single:.1f} s; "
        f"{members} members in one batched fit {fitted:.1f} s "
        f"({fitted / single:.2f}x one member); + DR answer {total - fitted:.1f} s; "
        f"ensemble + DR {total:.1f} s (target <= 60 s).",
        f"- DR answer {ans.estimate:.3f}, {ans.interval_method} "
        f"[{ans.interval[0]:.3f}, {ans.interval[1]:.3f}] (sample truth {truth:.3f}); "
        f"Monte Carlo s.e. {ans.mc_stderr:.3f}.",
    ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["all", "acic", "speed"], default="all")
    p.add_argument("--dgps", type=int, nargs="*", default=list(range(1, 11)))
    p.add_argument("--members", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "RESULTS_acic.md"))
    args = p.parse_args()
    command = "python benchmarks/bench_acic.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
    )
    out = [
        "## Honest uncertainty: ACIC 2016 calibration and batched-ensemble speed",
        "",
        f"Command: `{command}` (machine shared by other jobs; timings are wall "
        "time in one run).",
        "",
    ]
    if args.part in ("all", "speed"):
        out += ["### Speed", "", *speed(args.members, args.seed), ""]
        print("\n".join(out), flush=True)
    if args.part in ("all", "acic"):
        torch.set_num_threads(1)
        out += ["### ACIC 2016 (causallib: one realisation per DGP)", ""]
        out += acic(args.dgps, args.members, args.seed)
    Path(args.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()

"""Our fitted SCMs on the Causal NF ground-truth suite, scored with the paper's metrics.

The benchmark ``benchmarks/bench_causal_nf_suite.py`` runs the whole suite against
``causalflows``; these tests check that a model built by
:class:`~pyro_causalgen.StructuralCausalModel` from an SCM's graph and fitted by
:func:`~pyro_causalgen.fit` answers the paper's queries (forward KL, ATE and
counterfactual errors of :mod:`pyro_causalgen.metrics`) close to the exact truth of
:mod:`pyro_causalgen.datasets.causal_nf`.

Reference scales, computed with the same metric functions:

- the *null* ATE error is that of a model whose interventions change nothing (ATE 0):
  exactly the norm of the true ATE;
- the *null* counterfactual error is that of answering every counterfactual with the
  factual row;
- the unfitted model is the same builder's model before :func:`fit`.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_causalgen import StructuralCausalModel, counterfactual, do, fit
from pyro_causalgen.datasets.causal_nf import GroundTruthSCM, load_scm
from pyro_causalgen.metrics import (
    evaluate_ate,
    evaluate_counterfactuals,
    forward_kl,
)


def paper_metrics(
    truth: GroundTruthSCM,
    model: StructuralCausalModel,
    train: torch.Tensor,
    test: torch.Tensor,
    num_samples: int = 5_000,
) -> dict[str, float]:
    """Forward KL, mean ATE error and mean counterfactual error of ``model``."""
    dtype = next(model.parameters()).dtype

    @torch.no_grad()
    def log_q(x: torch.Tensor) -> torch.Tensor:
        return model.log_prob_data(truth.to_dict(x.to(dtype)))

    @torch.no_grad()
    def sample_do(n: int, action: dict[str, float]):
        pyro.set_rng_seed(0)  # common random numbers in both arms
        return do(model, action)(n)

    @torch.no_grad()
    def cf(x: torch.Tensor, action: dict[str, float]):
        obs = truth.to_dict(x.to(dtype))
        return counterfactual(model, obs, action, len(x))["counterfactual"]

    ate = evaluate_ate(
        truth, sample_do, train, num_samples=num_samples, true_num_samples=20_000
    )
    return {
        "kl": forward_kl(test, truth.log_prob, log_q).item(),
        "ate": ate["mean"],
        "cf": evaluate_counterfactuals(truth, cf, test, train)["mean"],
    }


def null_errors(truth: GroundTruthSCM, train: torch.Tensor, test: torch.Tensor):
    """ATE error of "no effect" and counterfactual error of "nothing changes"."""
    ate = evaluate_ate(
        truth,
        lambda n, action: truth.sample(n, seed=0),  # ignores the intervention
        train,
        num_samples=10,
        true_num_samples=20_000,
        seed=0,
    )
    cf = evaluate_counterfactuals(truth, lambda x, action: x, test, train)
    return ate["mean"], cf["mean"]


def _data(truth: GroundTruthSCM, n_train: int, n_test: int, seed: int):
    return truth.sample(n_train, seed=seed), truth.sample(n_test, seed=seed + 1)


def test_linear_gaussian_scm_recovers_paper_metrics() -> None:
    """chain-3 linear with linear-Gaussian mechanisms: a well-specified model.

    ``x2 = 10 x1 - u2``, ``x3 = 0.25 x2 + 2 u3``: the builder's ``locscale`` mechanism
    without hidden layers is ``x = w pa + b + s u``, the truth's family, with 8
    parameters. With n = 1,800 training rows the MLE's slopes have standard errors
    ``1 / sqrt(n) = 0.024`` (x2 on x1) and ``2 / (10 sqrt(n)) = 0.005`` (x3 on x2);
    an intervention gap of at most 1.35 (25th to 75th percentile of N(0, 1), and of
    x2 divided by its scale 10) moves the ATE error by ``1.35 * sqrt(0.024^2 +
    (10 * 0.005)^2) = 0.08`` per standard error, and arms with common random numbers
    add no Monte-Carlo error for a linear model. We allow 0.3 (about 4 s.e., plus
    the jitter of 210 Adam steps at lr 0.02; measured 0.04-0.10 on four seeds); the
    null error is 5.6. The forward KL of a well-specified MLE is ``k / 2n = 0.002``;
    we allow 0.1. Counterfactuals of a linear model err by the same slope errors
    times the gap: bound 0.3 (null: 9.3).
    """
    truth = load_scm("chain-3", "linear")
    train, test = _data(truth, 2_000, 500, seed=0)
    model = StructuralCausalModel(truth.parents, mechanism="locscale")
    unfitted = paper_metrics(truth, model, train, test)
    fit(model, truth.to_dict(train.float()), epochs=30, lr=0.02, seed=0)
    got = paper_metrics(truth, model, train, test)
    null_ate, null_cf = null_errors(truth, train, test)
    assert null_ate > 5.0 and null_cf > 9.0  # the scales quoted above
    assert got["kl"] < 0.1 < unfitted["kl"]
    assert got["ate"] < 0.3 < 10 * 0.3 < unfitted["ate"]
    assert got["cf"] < 0.3 < 10 * 0.3 < unfitted["cf"]


def test_flow_scm_small_budget_cuts_the_null_error_fivefold() -> None:
    """triangle non-linear with one-layer NSF mechanisms and a tiny budget.

    ``x2 = 2 x1^2 + u2``, ``x3 = 20 sigmoid(x2^2 - x1) + u3``: the NSF family does not
    contain this map exactly, so the bound is relative. A model that has learned
    nothing about the mechanisms has the null errors (ATE ``||ATE_true||`` = 4.7,
    CF the factual-vs-counterfactual distance, 5.3). 300 Adam steps reach 6-13% of
    them over seeds (measured on four data seeds); we require a fifth, and an
    unfitted model misses by far. The forward KL of such a model is 0.15-0.3 nats;
    we allow 0.5 (an unfitted model: about 140).
    """
    truth = load_scm("triangle", "non-linear")
    train, test = _data(truth, 3_000, 500, seed=1)
    kw = {"transforms": 1, "hidden_features": (32, 32)}
    model = StructuralCausalModel(truth.parents, mechanism="nsf", mechanism_kwargs=kw)
    unfitted = paper_metrics(truth, model, train, test, num_samples=2_000)
    fit(model, truth.to_dict(train.float()), epochs=25, lr=1e-2, seed=0)
    got = paper_metrics(truth, model, train, test, num_samples=2_000)
    null_ate, null_cf = null_errors(truth, train, test)
    assert got["ate"] < 0.2 * null_ate < unfitted["ate"]
    assert got["cf"] < 0.2 * null_cf < unfitted["cf"]
    assert 0.0 < got["kl"] < 0.5 < unfitted["kl"]


# the slow tier: the benchmark's configuration on several SCMs of the suite
SLOW_SCMS = [
    ("triangle", "non-linear"),
    ("simpson", "non-linear"),
    ("fork", "non-linear"),
    ("chain-5", "linear"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,variant", SLOW_SCMS, ids=lambda s: str(s))
def test_flow_scm_on_suite(name: str, variant: str) -> None:
    """One-layer NSF mechanisms, 4,000 rows, 60 epochs: a fifth of the null errors.

    Measured on data seeds 2 and 3 (one process per run, so the model's own draws
    vary too): ATE errors 4-12% and counterfactual errors 3-10% of the null errors,
    forward KL 0.08-0.22 nats. We require a fifth of the null errors (about twice the
    worst measured) and KL below 0.3.
    """
    truth = load_scm(name, variant)
    train, test = _data(truth, 4_000, 1_000, seed=2)
    kw = {"transforms": 1, "hidden_features": (32, 32)}
    model = StructuralCausalModel(truth.parents, mechanism="nsf", mechanism_kwargs=kw)
    fit(model, truth.to_dict(train.float()), epochs=60, lr=5e-3, seed=0)
    got = paper_metrics(truth, model, train, test)
    null_ate, null_cf = null_errors(truth, train, test)
    assert math.isfinite(got["kl"]) and got["kl"] < 0.3
    assert got["ate"] < 0.2 * null_ate
    assert got["cf"] < 0.2 * null_cf


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4])
def test_weight_decay_lowers_large_backdoor_counterfactual_error(seed: int) -> None:
    """large-backdoor non-linear, the benchmark's reduced protocol for one data seed:
    x9's mechanism (two parents, Laplace noise) is where counterfactuals go wrong, as
    the hyper-network's dependence on (x7, x8) picks up wiggles that the likelihood
    does not penalise. Weight decay 1e-2 smooths it: over three seeds of the reduced
    protocol the CF error went from 0.040 to 0.017 (a factor 2.3; causalflows 0.023);
    this test's set-up gave factors 2.76, 2.69 and 2.57 on data seeds 4, 5 and 6 (CF
    0.045 -> 0.016). We require a factor 1.5."""
    truth = load_scm("large-backdoor", "non-linear")
    train, test = _data(truth, 9_000, 1_000, seed=seed)
    kw = {"transforms": 1, "hidden_features": (32, 32)}
    errors = {}
    for decay in (0.0, 1e-2):
        pyro.set_rng_seed(0)
        model = StructuralCausalModel(truth.parents, mechanism_kwargs=kw)
        data = truth.to_dict(train.float())
        fit(
            model,
            data,
            epochs=100,
            batch_size=500,
            lr=1e-3,
            val_fraction=1 / 9,
            patience=None,
            clip_norm=None,
            seed=0,
            weight_decay=decay,
        )
        errors[decay] = paper_metrics(truth, model, train, test, 2_000)["cf"]
    assert errors[1e-2] < errors[0.0] / 1.5, errors

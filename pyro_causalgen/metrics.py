"""Accuracy metrics of the causal normalizing flows benchmark (Javaloy et al., 2023).

Javaloy, Sánchez-Martín & Valera, "Causal normalizing flows: from theory to practice",
NeurIPS 2023, Section 6 and the evaluation code of ``psanch21/causal-flows``
(``causal_nf/models/causal_nf.py``, ``CausalNFightning.predict``). Three numbers per
SCM, each defined below with its source:

- **observational KL** (:func:`forward_kl`): ``KL(p || q) = E_p[log p(x) - log q(x)]``,
  estimated on samples ``x ~ p`` of the true SCM, with ``log p`` exact
  (:meth:`~pyro_causalgen.datasets.causal_nf.GroundTruthSCM.log_prob`).
  The paper's code logs, under the name ``kl_distance``, the sum of both directions
  estimated on true and model samples; that is :func:`symmetric_kl`.
- **ATE error** (:func:`ate_rmse`, :func:`evaluate_ate`): for each variable ``i`` the
  paper intervenes on and each pair ``(a, b)`` of its 25/50/75th training
  percentiles, ``ATE = E[x_{-i} | do(x_i = a)] - E[x_{-i} | do(x_i = b)]``, the vector
  of mean differences over *all other* variables; the error is the Euclidean norm
  ``sqrt(sum_j (ATE_j - ATE^true_j)^2)`` (``rmse_ate_x{i}={a}_{b}``).
- **counterfactual error** (:func:`counterfactual_rmse`,
  :func:`evaluate_counterfactuals`): for each intervention ``do(x_i = a)`` at a
  percentile, the Euclidean norm of the error of each unit's counterfactual row,
  averaged over units (``rmse_cf_x{i}={a}``).

The ``reduction="rmse"`` options give the textbook root-mean-square over variables
(and units) instead, for reports that want it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from pyro_causalgen.errors import ShapeError

if TYPE_CHECKING:
    from pyro_causalgen.datasets.causal_nf import GroundTruthSCM

__all__ = [
    "ate_rmse",
    "average_treatment_effect",
    "counterfactual_rmse",
    "evaluate_ate",
    "evaluate_counterfactuals",
    "forward_kl",
    "forward_kl_terms",
    "symmetric_kl",
]

LogProb = Callable[[Tensor], Tensor]
#: ``(n, do) -> (n, d)`` rows sampled under ``do`` (or ``{variable: (n,)}``).
InterventionalSampler = Callable[
    [int, dict[str, float]], "Tensor | Mapping[str, Tensor]"
]
#: ``(x_factual, do) -> (n, d)`` counterfactual rows.
CounterfactualFn = Callable[[Tensor, dict[str, float]], "Tensor | Mapping[str, Tensor]"]
Reduction = Literal["paper", "rmse"]

#: The percentiles the paper intervenes at.
PERCENTILES = (25, 50, 75)


def forward_kl_terms(
    x: Tensor, true_log_prob: LogProb, model_log_prob: LogProb
) -> Tensor:
    """Per-sample log ratios ``log p(x_n) - log q(x_n)``, shape ``(n,)``.

    Their mean is :func:`forward_kl`; their standard deviation over ``sqrt(n)`` is its
    Monte-Carlo standard error.

    :param x: samples of the true distribution ``p``, ``(n, d)``.
    :param true_log_prob: ``(n, d) -> (n,)``, exact ``log p``.
    :param model_log_prob: ``(n, d) -> (n,)``, the model's ``log q``.

    Example::

        >>> p = dist.Normal(0.0, 1.0)
        >>> forward_kl_terms(torch.zeros(2, 1), lambda x: p.log_prob(x).sum(-1),
        ...                  lambda x: p.log_prob(x - 1).sum(-1))
        tensor([0.5000, 0.5000])
    """
    lp = torch.as_tensor(true_log_prob(x))
    lq = torch.as_tensor(model_log_prob(x)).to(lp)
    if lp.shape != lq.shape:
        raise ShapeError(
            f"true log_prob has shape {tuple(lp.shape)} but model log_prob has "
            f"shape {tuple(lq.shape)} on the same samples"
        )
    return lp - lq


def forward_kl(x: Tensor, true_log_prob: LogProb, model_log_prob: LogProb) -> Tensor:
    """Forward KL ``KL(p || q) = E_p[log p(x) - log q(x)]`` estimated on ``x ~ p``.

    The observational KL of Javaloy et al. (2023, Section 6), with ``log p`` the exact
    density of the true SCM (change of variables through its exact inverse) and
    ``log q`` the model's. Exactly ``0`` when ``q`` is ``p`` (same samples).

    :param x: samples of the true distribution, ``(n, d)``.
    :param true_log_prob: exact ``log p``, ``(n, d) -> (n,)``.
    :param model_log_prob: model ``log q``, ``(n, d) -> (n,)``.
    :returns: 0-d tensor.

    Example::

        >>> from pyro_causalgen.datasets.causal_nf import load_scm
        >>> scm = load_scm("chain-3", "linear")
        >>> x = scm.sample(100, seed=0)
        >>> forward_kl(x, scm.log_prob, scm.log_prob).item()
        0.0
    """
    return forward_kl_terms(x, true_log_prob, model_log_prob).mean()


def symmetric_kl(
    x_true: Tensor,
    x_model: Tensor,
    true_log_prob: LogProb,
    model_log_prob: LogProb,
) -> Tensor:
    """``KL(p || q) + KL(q || p)``, each direction estimated on its own samples.

    This is what the paper's evaluation code logs as ``kl_distance``
    (``log p(x) + log q(x') - log p(x') - log q(x)`` with ``x ~ p``, ``x' ~ q``). The
    reverse term is infinite when the model puts mass outside the true support
    (e.g. ``large-backdoor``, whose noise is bounded).

    :param x_true: samples of ``p``, ``(n, d)``.
    :param x_model: samples of ``q``, ``(m, d)``.
    :returns: 0-d tensor.

    Example::

        >>> p, q = dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)
        >>> lp = lambda x: p.log_prob(x).sum(-1)
        >>> lq = lambda x: q.log_prob(x).sum(-1)
        >>> symmetric_kl(torch.zeros(1, 1), torch.ones(1, 1), lp, lq)  # 2 * 0.5
        tensor(1.)
    """
    forward = forward_kl(x_true, true_log_prob, model_log_prob)
    reverse = forward_kl(x_model, model_log_prob, true_log_prob)
    return forward + reverse


def average_treatment_effect(
    x_a: Tensor, x_b: Tensor, exclude: int | None = None
) -> Tensor:
    """``E[x | do(a)] - E[x | do(b)]`` from interventional samples, per variable.

    :param x_a: rows sampled under the first intervention, ``(n, d)``.
    :param x_b: rows sampled under the second, ``(m, d)``.
    :param exclude: column to drop (the intervened variable), as the paper does.
    :returns: ``(d,)``, or ``(d - 1,)`` with ``exclude``.

    Example::

        >>> x_a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 4.0, 5.0]])
        >>> average_treatment_effect(x_a, torch.zeros(1, 3), exclude=0)
        tensor([3., 4.])
    """
    if x_a.shape[-1] != x_b.shape[-1]:
        raise ShapeError(
            f"interventional samples have {x_a.shape[-1]} and {x_b.shape[-1]} columns"
        )
    ate = x_a.mean(-2) - x_b.to(x_a).mean(-2)
    if exclude is None:
        return ate
    keep = [j for j in range(ate.shape[-1]) if j != exclude]
    return ate[..., keep]


def ate_rmse(
    ate_true: Tensor, ate_model: Tensor, reduction: Reduction = "paper"
) -> Tensor:
    """Error of an estimated ATE vector against the true one, over the last dim.

    ``reduction="paper"``: ``sqrt(sum_j (ATE_j - ATE^true_j)^2)``, as
    ``rmse_ate`` in the paper's code (``torch.sqrt((diff_ate**2).sum())``);
    ``"rmse"``: ``sqrt(mean_j ...)``.

    :param ate_true: ``(..., k)``.
    :param ate_model: ``(..., k)``.
    :returns: ``(...)``.

    Example::

        >>> ate_rmse(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0]))
        tensor(5.)
        >>> ate_rmse(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0]), "rmse")
        tensor(3.5355)
    """
    diff2 = (torch.as_tensor(ate_model).to(ate_true) - ate_true) ** 2
    return _reduce_last(diff2, reduction).sqrt()


def counterfactual_rmse(
    x_cf_true: Tensor, x_cf_model: Tensor, reduction: Reduction = "paper"
) -> Tensor:
    """Error of counterfactual rows against the exact ones.

    ``reduction="paper"``: the mean over units of each unit's Euclidean error,
    ``mean_n sqrt(sum_j (x_nj - x^true_nj)^2)``, as ``rmse_cf`` in the paper's code;
    ``"rmse"``: ``sqrt(mean_{n,j} (x_nj - x^true_nj)^2)``.

    :param x_cf_true: exact counterfactuals, ``(n, d)``.
    :param x_cf_model: the model's, ``(n, d)``.
    :returns: 0-d tensor.

    Example::

        >>> truth = torch.zeros(2, 2)
        >>> counterfactual_rmse(truth, torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor(2.5000)
    """
    x_cf_model = torch.as_tensor(x_cf_model).to(x_cf_true)
    if x_cf_model.shape != x_cf_true.shape:
        raise ShapeError(
            f"model counterfactuals have shape {tuple(x_cf_model.shape)}, the exact "
            f"ones {tuple(x_cf_true.shape)}"
        )
    diff2 = (x_cf_model - x_cf_true) ** 2
    if reduction == "paper":
        return diff2.sum(-1).sqrt().mean()
    if reduction == "rmse":
        return diff2.mean().sqrt()
    raise ValueError(f"reduction must be 'paper' or 'rmse', got {reduction!r}")


def evaluate_ate(
    scm: GroundTruthSCM,
    model_sample: InterventionalSampler,
    data: Tensor,
    *,
    num_samples: int = 10_000,
    true_num_samples: int = 100_000,
    seed: int | None = None,
    targets: Sequence[str] | None = None,
    reduction: Reduction = "paper",
) -> dict[str, float]:
    """ATE errors of a model on the paper's interventions, one per (variable, pair).

    For each ``v`` in ``targets`` (default: the paper's
    ``scm.intervention_targets``) and each pair ``(p, q)`` of the 25/50/75th
    percentiles of ``v`` in ``data`` (rounded as in the paper,
    :meth:`~pyro_causalgen.datasets.causal_nf.GroundTruthSCM.intervention_values`),
    the model's ATE from ``num_samples`` rows per arm is compared with the true ATE by
    :func:`ate_rmse`. The true ATE uses ``true_num_samples`` rows with the *same*
    noise in both arms (common random numbers: unbiased, and exact for linear SCMs).

    :param scm: the true SCM.
    :param model_sample: ``(n, {v: value}) -> (n, d)`` (or ``{variable: (n,)}``).
    :param data: training rows ``(n, d)`` that fix the percentiles.
    :param seed: seed of the true ATE's noise (``None``: the global RNG, unseeded).
    :returns: ``{"x2=25_50": err, ..., "mean": average over all keys}``.

    Example::

        >>> from pyro_causalgen.datasets.causal_nf import load_scm
        >>> scm = load_scm("chain-3", "linear")
        >>> data = scm.sample(1000, seed=0)
        >>> def model(n, do):  # same noise in both arms: exact ATE on a linear SCM
        ...     return scm.sample(n, seed=2, do=do)
        >>> res = evaluate_ate(scm, model, data, true_num_samples=1000, seed=1)
        >>> sorted(res)[:3], res["mean"] < 1e-9
        (['mean', 'x1=25_50', 'x1=25_75'], True)
    """
    targets = list(scm.intervention_targets if targets is None else targets)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=data.device).manual_seed(int(seed))
    u = scm.sample_noise(true_num_samples, gen, device=data.device)
    out: dict[str, float] = {}
    for v in targets:
        i = scm.index(v)
        values = scm.intervention_values(v, data, PERCENTILES)
        by_pct = dict(zip(PERCENTILES, values.tolist(), strict=True))
        for p, q in combinations(PERCENTILES, 2):
            a, b = by_pct[p], by_pct[q]
            true = average_treatment_effect(
                scm.forward(u, {v: a}), scm.forward(u, {v: b}), exclude=i
            )
            xa = _as_rows(scm, model_sample(num_samples, {v: a}), u)
            xb = _as_rows(scm, model_sample(num_samples, {v: b}), u)
            est = average_treatment_effect(xa, xb, exclude=i)
            out[f"{v}={p}_{q}"] = float(ate_rmse(true, est, reduction))
    out["mean"] = sum(out.values()) / len(out) if out else float("nan")
    return out


def evaluate_counterfactuals(
    scm: GroundTruthSCM,
    model_counterfactual: CounterfactualFn,
    x_factual: Tensor,
    data: Tensor,
    *,
    targets: Sequence[str] | None = None,
    reduction: Reduction = "paper",
) -> dict[str, float]:
    """Counterfactual errors of a model on the paper's interventions.

    For each ``v`` in ``targets`` (default ``scm.intervention_targets``) and each of
    its 25/50/75th percentiles ``a`` in ``data``, the model's counterfactuals of
    ``x_factual`` under ``do(v = a)`` are compared with the exact ones
    (:meth:`~pyro_causalgen.datasets.causal_nf.GroundTruthSCM.counterfactual`) by
    :func:`counterfactual_rmse`.

    :param model_counterfactual: ``(x_factual, {v: value}) -> (n, d)``.
    :param x_factual: factual rows ``(n, d)`` (the paper uses test rows).
    :param data: training rows that fix the percentiles.
    :returns: ``{"x2=25p": err, ..., "mean": average over all keys}``.

    Example::

        >>> from pyro_causalgen.datasets.causal_nf import load_scm
        >>> scm = load_scm("fork", "non-linear")
        >>> data, x = scm.sample(500, seed=0), scm.sample(50, seed=1)
        >>> evaluate_counterfactuals(scm, scm.counterfactual, x, data)["mean"]
        0.0
    """
    targets = list(scm.intervention_targets if targets is None else targets)
    x_factual = (
        scm.from_dict(x_factual) if isinstance(x_factual, Mapping) else x_factual
    )
    out: dict[str, float] = {}
    for v in targets:
        values = scm.intervention_values(v, data, PERCENTILES)
        for p, a in zip(PERCENTILES, values.tolist(), strict=True):
            true = scm.counterfactual(x_factual, {v: a})
            est = _as_rows(scm, model_counterfactual(x_factual, {v: a}), true)
            out[f"{v}={p}p"] = float(counterfactual_rmse(true, est, reduction))
    out["mean"] = sum(out.values()) / len(out) if out else float("nan")
    return out


def _reduce_last(t: Tensor, reduction: str) -> Tensor:
    if reduction == "paper":
        return t.sum(-1)
    if reduction == "rmse":
        return t.mean(-1)
    raise ValueError(f"reduction must be 'paper' or 'rmse', got {reduction!r}")


def _as_rows(scm: GroundTruthSCM, out: Tensor | Mapping[str, Tensor], like: Tensor):
    """A model's output as ``(n, d)`` float64 rows on ``like``'s device."""
    rows = scm.from_dict(out) if isinstance(out, Mapping) else torch.as_tensor(out)
    if rows.dim() != 2 or rows.shape[-1] != scm.dim:
        raise ShapeError(
            f"model output for {scm} must have shape (n, {scm.dim}), "
            f"got {tuple(rows.shape)}"
        )
    return rows.to(device=like.device, dtype=torch.float64)

"""Doubly robust (AIPW) average effects from a fitted model's own mechanisms.

A fitted causal generative model answers ``E[y | do(t=a)]`` by simulation (the
*plug-in*), and inherits every misfit of the outcome mechanism. With a discrete
treatment ``t`` and covariates ``x`` (every observed site that is not a descendant of
``t``; they satisfy the back-door criterion when ``t`` has no latent parent), the
efficient influence function of the interventional mean corrects the plug-in with the
treatment mechanism's propensity ``e_a(x) = p(t=a | x)`` (Robins, Rotnitzky & Zhao
1994: the augmented inverse-probability-weighted, AIPW, form; Kennedy 2022,
"Semiparametric doubly robust targeted double machine learning: a review")::

    psi_i   = mu_a(x_i) + 1{t_i = a} (f(y_i) - mu_a(x_i)) / e_a(x_i)
    theta_a = mean_i psi_i,          s.e. = sd(psi) / sqrt(N)

and for a mean among units with ``t = c`` (the effect on the treated, ``c = 1``)::

    theta_{a|c} = mean_i [1{t_i=c} mu_a(x_i) + 1{t_i=a} e_c/e_a (f(y_i) - mu_a(x_i))]
                  / mean_i 1{t_i=c}

``mu_a(x) = E[f(y) | do(t=a), x]`` is simulated from the model with ``x`` fixed to each
row's values (``replicates`` draws per row); ``e`` is the model's own treatment
mechanism at the observed covariates. The estimate is consistent when either
nuisance is right, and its interval comes from the influence function. Nuisances fitted
on the same rows overfit them: evaluate each row with models that did not see it
(out-of-bag members of a bootstrap
:class:`~pyro_causalgen.analysis.uncertainty.Ensemble`, or the folds of
:func:`~pyro_causalgen.infer.batched_ensemble.fit_batched_ensemble` with
``method="crossfit"``): :func:`~pyro_causalgen.analysis.query.ask` does this when
given such an ensemble and its own rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro.poutine as poutine
import torch
from torch import Tensor

from pyro_causalgen.analysis.simulate import paired_simulations, site_values
from pyro_causalgen.errors import CausalModelError, DataError


class PositivityWarning(UserWarning):
    """Estimated propensities near 0 or 1: inverse weights are large, the DR answer
    and its interval rest on few rows. The message gives the numbers.

    >>> issubclass(PositivityWarning, UserWarning)
    True
    """


@dataclass(frozen=True)
class AIPWTerm:
    """``sign * E[f(y_{t=level}) | t=given]`` (``given=None``: over all units).

    >>> AIPWTerm(1.0, 1.0).given is None
    True
    """

    sign: float
    level: float
    given: float | None = None


@dataclass
class Nuisances:
    """Per-row nuisances of one treatment: propensities and simulated outcome means.

    :ivar levels: the treatment values, ``(A,)``.
    :ivar propensity: ``p(t = level | x_i)``, ``(A, N)``.
    :ivar outcome: ``f(y)`` simulated under ``do(t=level)`` with row ``i``'s
        covariates, ``(R, A, N)`` (``R`` replicate draws).
    :ivar held_out: rows evaluated only by models that never saw them, ``(N,)``.

    >>> nu = Nuisances([0.0, 1.0], torch.full((2, 3), 0.5), torch.zeros(1, 2, 3))
    >>> nu.index(1.0)
    1
    """

    levels: list[float]
    propensity: Tensor
    outcome: Tensor
    held_out: Tensor | None = None

    def index(self, level: float) -> int:
        """Row of ``level`` in :attr:`propensity` and :attr:`outcome`."""
        return self.levels.index(float(level))


@dataclass
class DoublyRobustEstimate:
    """The AIPW answer with its influence-function standard error.

    :ivar estimate: the doubly robust estimate.
    :ivar stderr: ``sd(influence) / sqrt(N)``, the statistical standard error.
    :ivar mc_stderr: Monte Carlo standard error from simulating ``mu`` (spread of the
        estimate over the ``R`` replicate draws, divided by ``sqrt(R)``).
    :ivar plugin: the plug-in estimate from the same simulated ``mu``.
    :ivar influence: each row's influence-function value, ``(N,)``.
    :ivar propensity_range: smallest and largest propensity used.
    :ivar held_out_rows: rows whose nuisances came from models that never saw them.
    :ivar details: ``"levels"``, ``"outcome_means"`` ``(A, N)`` (simulated
        ``mu_a(x_i)``: their differences are per-unit effect estimates) and
        ``"propensity"`` ``(A, N)``.

    >>> est = DoublyRobustEstimate(1.0, 0.1, 0.0, 1.1, torch.zeros(3), (0.2, 0.8))
    >>> [round(v, 4) for v in est.interval(0.95)]
    [0.804, 1.196]
    """

    estimate: float
    stderr: float
    mc_stderr: float
    plugin: float
    influence: Tensor
    propensity_range: tuple[float, float]
    held_out_rows: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def interval(self, prob: float = 0.9) -> tuple[float, float]:
        """``estimate -/+ z_{(1+prob)/2} * stderr`` (normal approximation)."""
        z = normal_quantile(0.5 + prob / 2)
        return self.estimate - z * self.stderr, self.estimate + z * self.stderr


def normal_quantile(p: float) -> float:
    """The standard normal quantile at ``p``.

    >>> round(normal_quantile(0.975), 4)
    1.96
    """
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p)).item())


def adjustment_sites(graph: Any, treatment: str, observed: Sequence[str]) -> list[str]:
    """The covariates of the AIPW answer: every site that is not ``treatment`` or one
    of its descendants; all must be observed.

    :param graph: the model's full graph (every sample site, an
        :class:`~pyro_causalgen.graph.ADMG`).
    :raises CausalModelError: naming the latent sites that are not descendants of the
        treatment (they would have to be integrated out given the covariates).

    >>> from pyro_causalgen.graph import ADMG
    >>> graph = ADMG.from_string("x -> t; x -> y; t -> y")
    >>> adjustment_sites(graph, "t", ["x", "t", "y"])
    ['x']
    """
    after = set(graph.descendants([treatment], include_self=True))
    before = [v for v in graph.nodes if v not in after]
    hidden = [v for v in before if v not in set(observed)]
    if hidden:
        raise CausalModelError(
            f"the doubly robust answer conditions on every site that is not a "
            f"descendant of '{treatment}', but {hidden} are not in the data "
            "(latent confounders have no propensity to estimate): use the plug-in"
        )
    return before


def estimate_nuisances(
    models: Sequence[Callable],
    rows: Mapping[str, Tensor],
    treatment: str,
    covariates: Sequence[str],
    levels: Sequence[float],
    quantity: Callable[[Mapping[str, Tensor]], Tensor],
    replicates: int,
    use: Tensor | None = None,
    kw: Mapping[str, Any] | None = None,
) -> Nuisances:
    """Propensities and outcome means per row, averaged over ``models``.

    :param models: fitted models (one, the members of an ensemble, or folds).
    :param rows: observed values ``(N, ...)`` per site (covariates and treatment).
    :param quantity: ``f``, mapping simulated site values ``{site: (units, ...)}`` to
        ``(units,)`` (the outcome, or an indicator of one of its values).
    :param replicates: simulated draws of the outcome per row and level.
    :param use: ``(M, N)`` boolean: which model evaluates which row (default all).
        Rows no model may evaluate are evaluated by all of them.
    :param kw: ``model_args``, ``model_kwargs``, ``units_arg`` as in
        :func:`~pyro_causalgen.analysis.query.ask`.
    :returns: :class:`Nuisances`; :attr:`Nuisances.held_out` marks rows that had at
        least one model of their own.

    >>> from pyro_causalgen.scm import StructuralCausalModel
    >>> scm = StructuralCausalModel({"x": [], "t": ["x"], "y": ["x", "t"]},
    ...     mechanism={"x": "locscale", "t": "bernoulli", "y": "locscale"})
    >>> rows = {"x": torch.randn(4), "t": torch.tensor([0.0, 1, 0, 1])}
    >>> nu = estimate_nuisances([scm], rows, "t", ["x"], [0.0, 1.0],
    ...                         lambda v: v["y"], replicates=3)
    >>> nu.propensity.shape, nu.outcome.shape
    (torch.Size([2, 4]), torch.Size([3, 2, 4]))
    """
    kw = {
        "model_args": tuple((kw or {}).get("model_args", ())),
        "model_kwargs": dict((kw or {}).get("model_kwargs") or {}),
        "units_arg": (kw or {}).get("units_arg", "n"),
    }
    t_obs = site_values(rows, treatment)
    n = t_obs.shape[0]
    levels = [float(a) for a in levels]
    given_use = use is not None
    if use is None:
        use = torch.ones(len(models), n, dtype=torch.bool)
    use = use.to(torch.bool).cpu()
    if use.shape != (len(models), n):
        raise DataError(
            f"`use` must be ({len(models)}, {n}) (models x rows), "
            f"got {tuple(use.shape)}"
        )
    orphans = ~use.any(0)
    held_out = ~orphans
    use = use | orphans  # rows no model left out: every model evaluates them
    e_sum = torch.zeros(len(levels), n, dtype=torch.float64)
    mu_sum = torch.zeros(replicates, len(levels), n, dtype=torch.float64)
    count = use.sum(0).double()
    for m, model in enumerate(models):
        idx = use[m].nonzero().squeeze(-1)
        if idx.numel() == 0:
            continue
        sub = {k: v[idx.to(v.device)] for k, v in rows.items()}
        e_sum[:, idx] += _propensities(model, sub, treatment, covariates, levels, kw)
        mu_sum[:, :, idx] += _outcome_means(
            model, sub, treatment, covariates, levels, quantity, replicates, kw
        )
    return Nuisances(
        levels, e_sum / count, mu_sum / count, held_out if given_use else None
    )


def _call_kwargs(kw: Mapping[str, Any], units: int) -> dict:
    units_arg = kw["units_arg"]
    return {**kw["model_kwargs"], units_arg: units} if units_arg else kw["model_kwargs"]


@torch.no_grad()
def _propensities(
    model: Callable,
    rows: Mapping[str, Tensor],
    treatment: str,
    covariates: Sequence[str],
    levels: list[float],
    kw: Mapping[str, Any],
) -> Tensor:
    """``p(t = a | x_i)`` from the model's own treatment site, ``(A, N)``."""
    n = rows[treatment].shape[0]
    given = {k: rows[k] for k in [*covariates, treatment]}
    trace = poutine.trace(poutine.condition(model, data=given)).get_trace(
        *kw["model_args"], **_call_kwargs(kw, n)
    )
    fn = trace.nodes[treatment]["fn"]
    if not fn.support.is_discrete:
        raise CausalModelError(
            f"the doubly robust answer needs a discrete treatment mechanism at "
            f"'{treatment}' (Bernoulli or Categorical), to read its propensity; it has "
            f"{type(fn).__name__} with a continuous support: build the model with "
            f"mechanism={{'{treatment}': 'bernoulli'}} (or 'categorical')"
        )
    t = rows[treatment]
    out = []
    for a in levels:
        value = torch.full_like(t, a)
        out.append(fn.log_prob(value).exp().reshape(n).double().cpu())
    return torch.stack(out)


@torch.no_grad()
def _outcome_means(
    model: Callable,
    rows: Mapping[str, Tensor],
    treatment: str,
    covariates: Sequence[str],
    levels: list[float],
    quantity: Callable[[Mapping[str, Tensor]], Tensor],
    replicates: int,
    kw: Mapping[str, Any],
) -> Tensor:
    """``f(y)`` under ``do(t=a)`` with each row's covariates fixed, ``(R, A, N)``."""
    n = rows[treatment].shape[0]
    tiled = {
        k: rows[k].repeat(replicates, *[1] * (rows[k].dim() - 1)) for k in covariates
    }
    with poutine.condition(data=tiled):
        runs = paired_simulations(
            model, [{treatment: a} for a in levels], replicates * n, **kw
        )
    means = [quantity(run).double().cpu().reshape(replicates, n) for run in runs]
    return torch.stack(means, 1)


def aipw(
    terms: Sequence[AIPWTerm],
    treatment: Tensor,
    outcome: Tensor,
    nuisances: Nuisances,
    positivity: float = 0.02,
) -> DoublyRobustEstimate:
    """The AIPW estimate of ``sum_k sign_k E[f(y_{t=level_k}) | t=given_k]``.

    :param treatment: observed treatment per row, ``(N,)``.
    :param outcome: observed ``f(y)`` per row, ``(N,)``.
    :param nuisances: from :func:`estimate_nuisances` on the same rows.
    :param positivity: warn (:class:`PositivityWarning`) when a propensity used is
        below it or above ``1 - positivity``.
    :raises DataError: when no row has a treatment level the question needs.

    Example (true nuisances: the estimate is the mean of the true effect)::

        >>> t = torch.tensor([0.0, 1.0, 0.0, 1.0]); y = 2 * t
        >>> nu = Nuisances([0.0, 1.0], torch.full((2, 4), 0.5),
        ...                torch.tensor([[0.0] * 4, [2.0] * 4])[None])
        >>> est = aipw([AIPWTerm(1.0, 1.0), AIPWTerm(-1.0, 0.0)], t, y, nu)
        >>> est.estimate, est.stderr
        (2.0, 0.0)
    """
    t = treatment.double().cpu().reshape(-1)
    f = outcome.double().cpu().reshape(-1)
    n = t.shape[0]
    e_all = nuisances.propensity
    mu_all = nuisances.outcome  # (R, A, N)
    needed = {term.level for term in terms} | {
        term.given for term in terms if term.given is not None
    }
    for level in sorted(needed):
        if not bool((t == level).any()):
            raise DataError(
                f"no row has treatment {level:g}: the question needs units with it "
                f"(observed levels: {sorted(set(t.tolist()))})"
            )
    used = torch.stack([e_all[nuisances.index(a)] for a in sorted(needed)])
    lo, hi = used.min().item(), used.max().item()
    if lo < positivity or hi > 1 - positivity:
        few = int(((used < positivity) | (used > 1 - positivity)).any(0).sum())
        warnings.warn(
            f"propensities range over [{lo:.3g}, {hi:.3g}]; {few} of {n} rows have "
            f"one below {positivity:g} or above {1 - positivity:g}: inverse weights "
            "up to {:.3g}, the doubly robust answer rests on few rows".format(
                1 / max(min(lo, 1 - hi), 1e-12)
            ),
            PositivityWarning,
            stacklevel=4,
        )
    e_all = e_all.clamp(1e-6, 1.0)

    def one(mu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-row influence values, estimate and plug-in for outcome means ``mu``."""
        est = torch.zeros((), dtype=torch.float64)
        plug = torch.zeros((), dtype=torch.float64)
        phi = torch.zeros(n, dtype=torch.float64)
        for term in terms:
            a = nuisances.index(term.level)
            hit = (t == term.level).double()
            resid = hit * (f - mu[a]) / e_all[a]
            if term.given is None:
                psi = mu[a] + resid
                theta = psi.mean()
                phi_k = psi - theta
                plug_k = mu[a].mean()
            else:
                c = nuisances.index(term.given)
                in_c = (t == term.given).double()
                p_c = in_c.mean()
                psi = in_c * mu[a] + e_all[c] * resid
                theta = psi.mean() / p_c
                phi_k = (psi - theta * in_c) / p_c
                plug_k = (in_c * mu[a]).mean() / p_c
            est = est + term.sign * theta
            plug = plug + term.sign * plug_k
            phi = phi + term.sign * phi_k
        return est, plug, phi

    est, plug, phi = one(mu_all.mean(0))
    reps = mu_all.shape[0]
    if reps > 1:
        per_rep = torch.stack([one(mu_all[r])[0] for r in range(reps)])
        mc = per_rep.std().item() / math.sqrt(reps)
    else:
        mc = math.nan
    held = nuisances.held_out
    return DoublyRobustEstimate(
        estimate=est.item(),
        stderr=phi.std().item() / math.sqrt(n),
        mc_stderr=mc,
        plugin=plug.item(),
        influence=phi,
        propensity_range=(lo, hi),
        held_out_rows=int(held.sum()) if held is not None else 0,
        details={
            "levels": list(nuisances.levels),
            "outcome_means": mu_all.mean(0),
            "propensity": nuisances.propensity,
        },
    )


__all__ = [
    "AIPWTerm",
    "DoublyRobustEstimate",
    "Nuisances",
    "PositivityWarning",
    "adjustment_sites",
    "aipw",
    "estimate_nuisances",
    "normal_quantile",
]

"""Uncertainty over fitted mechanisms: deep ensembles and the bootstrap.

A model fitted once gives one answer; refitting it from different initialisations
(a deep ensemble) or on resampled rows (the non-parametric bootstrap) gives a set of
answers whose spread measures how much the data pin the effect down. Effects computed
on each member become draws that :mod:`pyro_causalgen.export` writes to ArviZ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pyro_causalgen.analysis.effects import MonteCarloEstimate
from pyro_causalgen.export import to_inference_data
from pyro_causalgen.infer.fit import FitHistory, fit, prepare_model_data
from pyro_causalgen.seeding import seeded_generator

METHODS = ("ensemble", "bootstrap")


@dataclass
class Ensemble:
    """Fitted copies of one model: ``members`` with their ``histories``.

    Built by :func:`fit_ensemble`; ``len(ensemble)`` is the number of members.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> build = lambda: StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> ens = fit_ensemble(build, {"x": torch.randn(40)}, members=2, epochs=2)
        >>> len(ens), ens.method, [len(h.train_loss) for h in ens.histories]
        (2, 'bootstrap', [2, 2])
    """

    members: list[nn.Module]
    method: str
    histories: list[FitHistory] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.members)


def fit_ensemble(
    build: Callable[[], nn.Module],
    data: Mapping[str, Any] | Any,
    members: int = 10,
    method: str = "bootstrap",
    seed: int | None = None,
    **fit_kwargs: Any,
) -> Ensemble:
    """Fit ``members`` copies of ``build()`` to ``data``.

    :param build: returns a fresh, unfitted model (its own random initialisation).
    :param method: ``"ensemble"``: every member on all rows; ``"bootstrap"``: every
        member on ``N`` rows drawn with replacement.
    :param seed: seeds the resampling and each member's split (member ``k`` uses
        ``seed + k``); model initialisation follows the caller's global RNG.
    :param fit_kwargs: passed to :func:`~pyro_causalgen.infer.fit.fit`.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> build = lambda: StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> ens = fit_ensemble(build, {"x": torch.randn(50)}, members=2, epochs=1)
        >>> len(ens)
        2
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}")
    if members < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {members}")
    gen = seeded_generator(seed)
    ensemble = Ensemble([], method)
    tensors = None
    for k in range(members):
        model = build()
        member_data = data
        if method == "bootstrap":
            if tensors is None:
                tensors = _as_tensors(model, data, fit_kwargs)
            rows = next(iter(tensors.values())).shape[0]
            idx = torch.randint(0, rows, (rows,), generator=gen)
            member_data = {name: v[idx.to(v.device)] for name, v in tensors.items()}
        member_seed = None if seed is None else seed + k
        ensemble.histories.append(
            fit(model, member_data, seed=member_seed, **fit_kwargs)
        )
        ensemble.members.append(model)
    return ensemble


def _as_tensors(model: nn.Module, data: Any, fit_kwargs: Mapping) -> dict[str, Tensor]:
    """Validate and convert ``data`` once (resampling needs row-indexable tensors)."""
    units_arg = fit_kwargs.get("units_arg", "n")
    kwargs = dict(fit_kwargs.get("model_kwargs") or {})
    if units_arg:
        kwargs[units_arg] = 1
    return prepare_model_data(model, data, fit_kwargs.get("model_args", ()), kwargs)


@dataclass
class EffectDraws:
    """One causal quantity computed on every member of an ensemble.

    :ivar query: what was computed, e.g. ``"E[y | do(x=1)] - E[y | do(x=0)]"``.
    :ivar draws: the estimate on each member, ``(members,)``.
    :ivar mc_stderr: each estimate's Monte Carlo standard error, ``(members,)``.
    :ivar identifiable: the identification verdict, when it was checked.

    Example::

        >>> eff = EffectDraws("E[y]", torch.tensor([0.9, 1.0, 1.1]),
        ...                   torch.zeros(3), "bootstrap")
        >>> round(eff.mean, 6), round(eff.stderr, 6)
        (1.0, 0.1)
        >>> lo, hi = eff.interval(0.9)  # mean +/- t(0.95; 2 dof) x stderr
        >>> round(hi - eff.mean, 4)
        0.292
    """

    query: str
    draws: Tensor
    mc_stderr: Tensor
    method: str
    identifiable: bool | None = None
    estimand: str | None = None

    @property
    def mean(self) -> float:
        return self.draws.mean().item()

    @property
    def stderr(self) -> float:
        """Spread across members, with the (small) simulation error added in."""
        between = self.draws.var().item() if len(self.draws) > 1 else 0.0
        within = (self.mc_stderr**2).mean().item()
        return math.sqrt(between + within)

    def interval(self, prob: float = 0.9) -> tuple[float, float]:
        """A ``prob`` interval: mean +/- t quantile (members - 1 dof) x stderr."""
        from scipy.stats import t as student_t

        k = len(self.draws)
        q = float(student_t.ppf(0.5 + prob / 2, df=max(k - 1, 1)))
        return self.mean - q * self.stderr, self.mean + q * self.stderr

    def summary(self, prob: float = 0.9) -> dict[str, Any]:
        lo, hi = self.interval(prob)
        return {
            "query": self.query,
            "estimate": self.mean,
            "stderr": self.stderr,
            f"lower_{prob:g}": lo,
            f"upper_{prob:g}": hi,
            "members": len(self.draws),
            "method": self.method,
            "identifiable": self.identifiable,
        }

    def to_inference_data(self, name: str = "effect") -> Any:
        """ArviZ data, member draws in ``posterior`` (chain 1, draw = member)."""
        attrs = {"query": self.query, "method": self.method}
        if self.identifiable is not None:
            attrs["identifiable"] = str(self.identifiable)
        if self.estimand is not None:
            attrs["estimand"] = self.estimand
        return to_inference_data(
            {"posterior": {name: self.draws.reshape(1, -1)}}, attrs=attrs
        )


def effect_over_members(
    ensemble: Ensemble | Sequence[Callable[..., Any]],
    estimate: Callable[[Any], MonteCarloEstimate],
    query: str,
    method: str | None = None,
) -> EffectDraws:
    """Apply ``estimate`` to every member (or posterior draw) and collect the draws.

    :param ensemble: an :class:`Ensemble`, or models such as
        :meth:`~pyro_causalgen.analysis.bayesian.BayesianModel.posterior_models`.
    :param method: recorded with the draws (defaults to the ensemble's method).

    Example::

        >>> from pyro_causalgen.analysis.effects import interventional_mean
        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> build = lambda: StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> ens = fit_ensemble(build, {"x": torch.randn(50)}, members=3, epochs=1)
        >>> mean_x = lambda m: interventional_mean(m, "x", n=10)
        >>> eff = effect_over_members(ens, mean_x, "E[x]")
        >>> eff.draws.shape
        torch.Size([3])
    """
    if isinstance(ensemble, Ensemble):
        models: Sequence[Any] = ensemble.members
        method = method or ensemble.method
    else:
        models = list(ensemble)
    results = [estimate(m) for m in models]
    verdicts = {r.identifiable for r in results}
    return EffectDraws(
        query=query,
        draws=torch.tensor([r.value for r in results], dtype=torch.float64),
        mc_stderr=torch.tensor([r.stderr for r in results], dtype=torch.float64),
        method=method or "draws",
        identifiable=verdicts.pop() if len(verdicts) == 1 else None,
    )

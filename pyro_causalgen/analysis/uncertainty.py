"""Uncertainty over fitted mechanisms: deep ensembles and the bootstrap.

A model fitted once gives one answer; refitting it from different initialisations
(a deep ensemble) or on resampled rows (the non-parametric bootstrap) gives a set of
answers whose spread measures how much the data pin the effect down. Effects computed
on each member become draws that :mod:`pyro_causalgen.export` writes to ArviZ.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pyro_causalgen.analysis.effects import MonteCarloEstimate
from pyro_causalgen.export import to_inference_data
from pyro_causalgen.infer.batched_ensemble import WEIGHTINGS, fit_batched
from pyro_causalgen.infer.fit import FitHistory, fit, prepare_model_data
from pyro_causalgen.io import load, save
from pyro_causalgen.scm import StructuralCausalModel
from pyro_causalgen.seeding import seeded_generator

_ENSEMBLE_FORMAT = "pyro_causalgen.ensemble/1"

#: ensemble methods; the last two only in one batched fit
METHODS = WEIGHTINGS
#: options of :func:`fit_batched` (a batched fit takes no others)
_BATCHED_OPTIONS = {
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "val_fraction",
    "patience",
    "clip_norm",
    "disable_progbar",
}


@dataclass
class Ensemble:
    """Fitted copies of one model: ``members`` with their ``histories``.

    Built by :func:`fit_ensemble` (one fit per member) or
    :func:`~pyro_causalgen.infer.batched_ensemble.fit_batched_ensemble` (all members
    in one batched fit); ``len(ensemble)`` is the number of members. ``weights``
    ``(members, N)`` are the members' weights on the rows ``data`` they were fitted
    on (bootstrap counts; ``0``: the row was held out of that member), when known:
    the doubly robust answer then evaluates each row with the members that did not
    see it.

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
    weights: Tensor | None = None
    data: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.members)

    def save(self, path: str | os.PathLike) -> None:
        """Write the members (each as :func:`pyro_causalgen.io.save` would), the
        method, and the row ``weights`` and ``data`` when known, to one file.

        Example::

            >>> import os, tempfile
            >>> from pyro_causalgen.scm import StructuralCausalModel
            >>> build = lambda: StructuralCausalModel({"x": []}, mechanism="locscale")
            >>> ens = fit_ensemble(build, {"x": torch.randn(20)}, members=2, epochs=1)
            >>> path = os.path.join(tempfile.mkdtemp(), "ens.pt")
            >>> ens.save(path)
            >>> again = load_model(path)
            >>> len(again), again.method, again.weights.shape
            (2, 'bootstrap', torch.Size([2, 20]))
        """
        blobs = []
        for member in self.members:
            buffer = io.BytesIO()
            save(member, buffer)
            blobs.append(buffer.getvalue())
        data = None if self.data is None else {k: v.cpu() for k, v in self.data.items()}
        torch.save(
            {
                "format": _ENSEMBLE_FORMAT,
                "method": self.method,
                "members": blobs,
                "weights": None if self.weights is None else self.weights.cpu(),
                "data": data,
            },
            path,
        )


def fit_ensemble(
    build: Callable[[], nn.Module],
    data: Mapping[str, Any] | Any,
    members: int = 10,
    method: str = "bootstrap",
    seed: int | None = None,
    batched: bool | None = None,
    **fit_kwargs: Any,
) -> Ensemble:
    """Fit ``members`` copies of ``build()`` to ``data``.

    :param build: returns a fresh, unfitted model (its own random initialisation).
    :param method: ``"ensemble"``: every member on all rows; ``"bootstrap"``: every
        member on ``N`` rows drawn with replacement; batched only:
        ``"bayesian_bootstrap"`` (Dirichlet row weights) and ``"crossfit"`` (member
        ``k`` leaves out fold ``k``).
    :param seed: seeds the resampling and each member's split (member ``k`` uses
        ``seed + k``); sequential fits take the initialisation from the caller's
        global RNG, a batched fit from ``seed``.
    :param batched: fit all members as one batched model
        (:func:`~pyro_causalgen.infer.batched_ensemble.fit_batched`; the ensemble
        then records each member's row ``weights`` and the ``data``); default: when
        ``build()`` is a :class:`~pyro_causalgen.scm.StructuralCausalModel` and
        ``fit_kwargs`` are options a batched fit takes.
    :param fit_kwargs: passed to :func:`~pyro_causalgen.infer.fit.fit` (or
        :func:`~pyro_causalgen.infer.batched_ensemble.fit_batched`).

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
    if batched is None:
        batched = set(fit_kwargs) <= _BATCHED_OPTIONS and isinstance(
            build(), StructuralCausalModel
        )
    if batched:
        out = fit_batched(build, data, members, method, seed=seed, **fit_kwargs)
        return Ensemble(
            out.members, method, [out.history] * members, out.weights, out.data
        )
    if method not in ("ensemble", "bootstrap"):
        raise ValueError(f"method {method!r} needs a batched fit (batched=True)")
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


def load_model(path: str | os.PathLike, map_location: Any = None) -> Any:
    """A model saved by :func:`pyro_causalgen.io.save`, or an :class:`Ensemble` saved
    by :meth:`Ensemble.save`.

    Example::

        >>> import os, tempfile
        >>> from pyro_causalgen.io import save
        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save(StructuralCausalModel({"x": []}, mechanism="locscale"), path)
        >>> type(load_model(path)).__name__
        'StructuralCausalModel'
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _ENSEMBLE_FORMAT:
        return load(path, map_location=map_location)
    members = [load(io.BytesIO(b), map_location=map_location) for b in blob["members"]]
    data = blob["data"]
    if data is not None and map_location is not None:
        data = {k: v.to(map_location) for k, v in data.items()}
    return Ensemble(members, blob["method"], [], blob["weights"], data)


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

    The statistical uncertainty is the spread of :attr:`draws` (:attr:`stderr`,
    :meth:`interval`); the simulation's own error is :attr:`mc_error`, reported
    apart.

    Example::

        >>> eff = EffectDraws("E[y]", torch.tensor([0.9, 1.0, 1.1]),
        ...                   torch.full((3,), 0.03), "bootstrap")
        >>> round(eff.mean, 6), round(eff.stderr, 6), round(eff.mc_error, 6)
        (1.0, 0.1, 0.017321)
        >>> [round(v, 4) for v in eff.interval(0.9)]  # 5% and 95% percentiles
        [0.91, 1.09]
        >>> lo, hi = eff.interval(0.9, kind="t")  # mean +/- t(0.95; 2 dof) x stderr
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
        """Statistical standard error: the standard deviation of the draws."""
        return self.draws.std().item() if len(self.draws) > 1 else math.nan

    @property
    def mc_error(self) -> float:
        """Monte Carlo standard error of :attr:`mean` (simulation only)."""
        return math.sqrt((self.mc_stderr**2).mean().item() / len(self.mc_stderr))

    def interval(
        self, prob: float = 0.9, kind: str = "percentile"
    ) -> tuple[float, float]:
        """A ``prob`` interval over the draws.

        :param kind: ``"percentile"`` (default): the equal-tailed percentiles of the
            draws; ``"t"``: mean +/- Student-t quantile (members - 1 dof) x
            :attr:`stderr`.
        """
        if kind == "percentile":
            q = torch.tensor([(1 - prob) / 2, (1 + prob) / 2], dtype=torch.float64)
            lo, hi = torch.quantile(self.draws.double(), q).tolist()
            return lo, hi
        if kind != "t":
            raise ValueError(f"unknown interval kind {kind!r}; use 'percentile' or 't'")
        from scipy.stats import t as student_t

        k = len(self.draws)
        q = float(student_t.ppf(0.5 + prob / 2, df=max(k - 1, 1)))
        return self.mean - q * self.stderr, self.mean + q * self.stderr

    def interval_label(self, prob: float = 0.9, kind: str = "percentile") -> str:
        """What :meth:`interval` is, in words (for printing and export)."""
        who = (
            "posterior draws" if self.method == "bayesian" else f"{self.method} members"
        )
        if kind == "t":
            return (
                f"{prob:.0%} interval, Student t over {len(self.draws)} {who} "
                f"({len(self.draws) - 1} dof)"
            )
        return f"{prob:.0%} interval, percentiles of {len(self.draws)} {who}"

    def summary(self, prob: float = 0.9, kind: str = "percentile") -> dict[str, Any]:
        lo, hi = self.interval(prob, kind)
        return {
            "query": self.query,
            "estimate": self.mean,
            "stderr": self.stderr,
            f"lower_{prob:g}": lo,
            f"upper_{prob:g}": hi,
            "interval": self.interval_label(prob, kind),
            "mc_stderr": self.mc_error,
            "members": len(self.draws),
            "method": self.method,
            "identifiable": self.identifiable,
        }

    def to_inference_data(self, name: str = "effect", prob: float = 0.9) -> Any:
        """ArviZ data, member draws in ``posterior`` (chain 1, draw = member).

        Each member's Monte Carlo standard error is ``{name}_mc_stderr`` in the same
        group; the attributes say what the interval over the draws is
        (``interval``, at ``prob``) and give the Monte Carlo error of the mean
        (``mc_stderr``), so the two are never confused.
        """
        lo, hi = self.interval(prob)
        attrs = {
            "query": self.query,
            "method": self.method,
            "interval": self.interval_label(prob),
            "interval_lower": lo,
            "interval_upper": hi,
            "mc_stderr": self.mc_error,
        }
        if self.identifiable is not None:
            attrs["identifiable"] = str(self.identifiable)
        if self.estimand is not None:
            attrs["estimand"] = self.estimand
        draws = {
            name: self.draws.reshape(1, -1),
            f"{name}_mc_stderr": self.mc_stderr.reshape(1, -1),
        }
        return to_inference_data({"posterior": draws}, attrs=attrs)


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

"""Interventional expectations and average effects, with Monte Carlo error.

Every function takes a fitted model (a Pyro program, e.g. a
:class:`~pyro_causalgen.scm.StructuralCausalModel`) and answers by simulating the
intervened program; uncertainty over the model itself comes from
:mod:`pyro_causalgen.analysis.uncertainty`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyro_causalgen.analysis.simulate import paired_simulations, simulate, site_values
from pyro_causalgen.graph import extract_graph
from pyro_causalgen.identify import CausalQuery
from pyro_causalgen.identify.guard import check_identifiable
from pyro_causalgen.infer.counterfactual import counterfactual


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A simulated expectation: ``value`` with its Monte Carlo standard error.

    ``identifiable`` is the verdict of the identification guard when it ran (see
    ``observed`` in :func:`interventional_mean`), else ``None``.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
        >>> est = interventional_mean(scm, "y", {"x": 1.0}, n=100, observed=["x", "y"])
        >>> est.samples, est.identifiable
        (100, True)
    """

    value: float
    stderr: float
    samples: int
    identifiable: bool | None = None


def guard(
    model: Callable,
    outcome: str,
    treatments: Iterable[str],
    observed: Iterable[str] | None,
    strict: bool,
    kwargs: Mapping[str, Any],
) -> bool | None:
    """Check ``P(outcome | do(treatments))`` on the model's graph over ``observed``.

    Returns ``None`` (no check) when ``observed`` is ``None``; otherwise warns with
    :class:`~pyro_causalgen.identify.NonIdentifiableWarning` (raises
    :class:`~pyro_causalgen.identify.Unidentifiable` when ``strict``) naming the
    witness, and returns the verdict.
    """
    if observed is None:
        return None
    units_arg = kwargs.get("units_arg", "n")
    model_kwargs = dict(kwargs.get("model_kwargs") or {})
    if units_arg:
        model_kwargs[units_arg] = 1
    graph = extract_graph(
        model,
        list(observed),
        model_args=tuple(kwargs.get("model_args", ())),
        model_kwargs=model_kwargs,
    )
    query = CausalQuery([outcome], list(treatments))
    return check_identifiable(graph, query, strict=strict).identifiable


def _mean_and_se(x: Tensor, identifiable: bool | None) -> MonteCarloEstimate:
    flat = x.reshape(x.shape[0], -1).double().mean(-1) if x.dim() > 1 else x.double()
    n = flat.shape[0]
    se = flat.std().item() / math.sqrt(n) if n > 1 else math.nan
    return MonteCarloEstimate(flat.mean().item(), se, n, identifiable)


def interventional_mean(
    model: Callable,
    outcome: str,
    interventions: Mapping[str, Any] | None = None,
    n: int = 10_000,
    *,
    observed: Iterable[str] | None = None,
    strict: bool = False,
    **kwargs: Any,
) -> MonteCarloEstimate:
    """``E[outcome | do(interventions)]`` by simulating ``n`` units.

    For a vector outcome the mean is over units and event elements.

    :param observed: the sites the model was fitted on; when given, the query is
        first checked for identifiability on the model's graph (unobserved sites
        projected out) and a non-identifiable one warns, or raises if ``strict``.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
        >>> est = interventional_mean(scm, "x", {"x": 1.5}, n=100)
        >>> est.value, est.stderr
        (1.5, 0.0)
    """
    verdict = guard(model, outcome, interventions or {}, observed, strict, kwargs)
    values = simulate(model, interventions, n, **kwargs)
    return _mean_and_se(site_values(values, outcome), verdict)


def average_treatment_effect(
    model: Callable,
    outcome: str,
    treatment: str,
    treated: Any,
    control: Any,
    n: int = 10_000,
    *,
    observed: Iterable[str] | None = None,
    strict: bool = False,
    **kwargs: Any,
) -> MonteCarloEstimate:
    """``E[Y | do(T=treated)] - E[Y | do(T=control)]`` with common random numbers.

    Both arms reuse the same exogenous noise per unit, so the estimate is the mean of
    unit-level effects and its standard error is that of their differences.
    ``observed`` and ``strict``: the identification guard, as in
    :func:`interventional_mean`.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"t": [], "y": ["t"]}, mechanism="locscale")
        >>> ate = average_treatment_effect(scm, "y", "t", 1.0, 0.0, n=50)
        >>> ate.stderr < 1e-6  # a linear model: every unit has the same effect
        True
    """
    verdict = guard(model, outcome, [treatment], observed, strict, kwargs)
    treated_run, control_run = paired_simulations(
        model, [{treatment: treated}, {treatment: control}], n, **kwargs
    )
    diff = site_values(treated_run, outcome) - site_values(control_run, outcome)
    return _mean_and_se(diff, verdict)


def unit_level_effects(
    model: Callable,
    data: Mapping[str, Tensor],
    outcome: str,
    treatment: str,
    treated: Any,
    control: Any,
    *args: Any,
    **kwargs: Any,
) -> Tensor:
    """``Y_i(T=treated) - Y_i(T=control)`` for every observed unit ``i``, ``(n, ...)``.

    Both arms are worlds of one multi-world counterfactual, so each unit keeps its
    abducted noise (exact where the mechanisms are invertible and observed, a posterior
    draw otherwise) in both. ``args``/``kwargs`` go to the model (e.g. ``n=rows``).

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"t": [], "y": ["t"]}, mechanism="locscale")
        >>> rows = {"t": torch.randn(3), "y": torch.randn(3)}
        >>> unit_level_effects(scm, rows, "y", "t", 1.0, 0.0, n=3).shape
        torch.Size([3])
    """
    worlds = {"treated": {treatment: treated}, "control": {treatment: control}}
    out = counterfactual(model, data, worlds, *args, **kwargs)
    return site_values(out["treated"], outcome) - site_values(out["control"], outcome)


def conditional_average_treatment_effect(
    model: Callable,
    data: Mapping[str, Tensor],
    outcome: str,
    treatment: str,
    treated: Any,
    control: Any,
    where: Tensor | None = None,
    *args: Any,
    **kwargs: Any,
) -> MonteCarloEstimate:
    """Mean unit-level effect over the observed units selected by ``where``.

    With ``where`` a boolean mask over rows (e.g. ``data["age"] > 60``) this is the
    sample CATE of that subgroup; with ``where = data[treatment] == treated`` it is the
    effect of treatment on the treated (see
    :func:`effect_of_treatment_on_the_treated`). The standard error is that of the mean
    over the selected units.

    :raises ValueError: if ``where`` selects no unit.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"t": [], "y": ["t"]}, mechanism="locscale")
        >>> rows = {"t": torch.tensor([0.0, 1.0, 2.0]), "y": torch.randn(3)}
        >>> cate = conditional_average_treatment_effect(
        ...     scm, rows, "y", "t", 1.0, 0.0, rows["t"] > 0.5, n=3)
        >>> cate.samples  # the two selected units
        2
    """
    effects = unit_level_effects(
        model, data, outcome, treatment, treated, control, *args, **kwargs
    )
    if where is not None:
        where = where.to(effects.device).bool()
        if not bool(where.any()):
            raise ValueError(f"`where` selects none of the {len(where)} units")
        effects = effects[where]
    return _mean_and_se(effects.detach(), None)


def effect_of_treatment_on_the_treated(
    model: Callable,
    data: Mapping[str, Tensor],
    outcome: str,
    treatment: str,
    treated: Any,
    control: Any,
    *args: Any,
    **kwargs: Any,
) -> MonteCarloEstimate:
    """``E[Y(treated) - Y(control) | T = treated]`` over the observed treated units.

    For continuous treatments select the units yourself and use
    :func:`conditional_average_treatment_effect`.

    :raises ValueError: naming the treatment if no unit has ``T == treated``.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"t": [], "y": ["t"]}, mechanism="locscale")
        >>> rows = {"t": torch.tensor([0.0, 1.0, 1.0]), "y": torch.randn(3)}
        >>> effect_of_treatment_on_the_treated(scm, rows, "y", "t", 1.0, 0.0,
        ...                                    n=3).samples
        2
    """
    t = site_values(data, treatment)
    where = t == torch.as_tensor(treated, dtype=t.dtype, device=t.device)
    if not bool(where.any()):
        raise ValueError(
            f"no observed unit has {treatment} == {treated}; for continuous treatments "
            "pass a mask to conditional_average_treatment_effect"
        )
    return conditional_average_treatment_effect(
        model, data, outcome, treatment, treated, control, where, *args, **kwargs
    )

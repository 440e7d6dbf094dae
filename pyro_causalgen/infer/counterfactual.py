"""``counterfactual``: factual and counterfactual values of every site, in one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro.poutine as poutine
from torch import Tensor

from pyro_causalgen.handlers.multi_world import MultiWorldCounterfactual
from pyro_causalgen.handlers.twin_world import TwinWorldCounterfactual
from pyro_causalgen.handlers.worlds import WorldsMessenger
from pyro_causalgen.infer.abduction import NoisePosterior, abduct
from pyro_causalgen.infer.fast_counterfactual import fast_twin


def counterfactual(
    model: Callable,
    observations: Mapping[str, Any],
    interventions: Mapping[str, Any],
    *args: Any,
    abduction: str | NoisePosterior = "auto",
    num_particles: int = 256,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Tensor]]:
    """Answer "what would the sites have been, had we intervened", unit by unit.

    Abduction -> action -> prediction with shared exogenous noise: the noise of each
    observed site is abducted exactly (or, for discrete sites, drawn from its exact
    posterior); the noise of unobserved sites is drawn from its posterior given the
    observations (see :func:`~pyro_causalgen.infer.abduction.abduct`), so repeated
    calls give independent draws from the counterfactual posterior.

    :param model: a Pyro program whose mechanism sites carry no ``obs=``.
    :param observations: ``site -> factual value`` (``(*plates, *event)``).
    :param interventions: ``site -> intervention`` (twin world: keys ``"factual"``
        and ``"counterfactual"`` in the result), or ``world name -> {site:
        intervention}`` (multi-world: one key per world, plus ``"factual"``).
    :param args: positional arguments of ``model``.
    :param abduction: ``"auto"``, ``"prior"``, ``"importance"``, ``"svi"`` (run
        :func:`abduct` first) or a :class:`NoisePosterior` from an earlier call.
    :param num_particles: importance particles when abduction needs them.
    :param max_plate_nesting: the model's plate depth (default: inferred).
    :param kwargs: keyword arguments of ``model``.
    :returns: ``{world: {site: value}}``; the value of an intervened site is its
        intervention in the worlds where it applies.

    A fully observed :class:`~pyro_causalgen.StructuralCausalModel` of stacked flows
    with hard interventions takes a fast path with the same values (batched exact
    abduction, then prediction of the targets' descendants only; see
    :mod:`pyro_causalgen.infer.fast_counterfactual`).

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(2 * x, 1.0))
        >>> out = counterfactual(model, {"x": 1.0, "y": 3.0}, {"x": 0.0})
        >>> out["factual"]["y"].item(), out["counterfactual"]["y"].item()
        (3.0, 1.0)
    """
    multi = bool(interventions) and all(
        isinstance(v, Mapping) for v in interventions.values()
    )
    if not multi and max_plate_nesting is None and isinstance(abduction, str):
        # every site observed: no latent noise, so abduction has nothing to do
        fast = fast_twin(model, observations, interventions, args, kwargs)
        if fast is not None:
            return fast

    def run(noise: Mapping[str, Tensor]) -> WorldsMessenger:
        handler: WorldsMessenger
        if multi:
            handler = MultiWorldCounterfactual(
                interventions, observations, max_plate_nesting
            )
        else:
            handler = TwinWorldCounterfactual(
                observations, interventions, max_plate_nesting
            )
        fn = poutine.condition(model, data=dict(noise)) if noise else model
        handler(fn)(*args, **kwargs)
        return handler

    if isinstance(abduction, NoisePosterior):
        handler = run(abduction.sample())
    else:
        # one pass with latent noise from its prior; it is the answer when there is
        # no latent noise (every unobserved site is then exactly abducted) or when
        # the prior is asked for
        handler = run({})
        if handler.latent_noise and abduction != "prior":
            posterior = abduct(
                model,
                observations,
                *args,
                method=abduction,
                num_particles=num_particles,
                plate_nesting=max_plate_nesting,
                **kwargs,
            )
            if posterior.method != "prior":
                handler = run(posterior.sample())
    return {w: handler.world_values(w) for w in handler.world_names}

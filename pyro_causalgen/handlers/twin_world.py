"""Twin-world counterfactuals: factual and counterfactual worlds with shared noise."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pyro_causalgen.handlers.worlds import COUNTERFACTUAL, Intervention, WorldsMessenger


class TwinWorldCounterfactual(WorldsMessenger):
    """Run a model in two worlds, ``"factual"`` and ``"counterfactual"``.

    Every mechanism site shares its exogenous noise between the worlds (see
    :mod:`pyro_causalgen.handlers.worlds`): its noise is abducted exactly from
    ``observations`` where the site is observed, drawn from the prior where it is not.
    Interventions, given here or by an enclosed :func:`~pyro_causalgen.do` (or ChiRho's
    ``do``), apply in the counterfactual world only. Values that differ between the
    worlds carry a world dim of size 2 to the left of the model's plates; read them with
    :meth:`gather`, :func:`~pyro_causalgen.handlers.worlds.world_value` or
    :attr:`values`.

    :param observations: ``site -> value`` observed in the factual world.
    :param interventions: ``site -> intervention`` applied in the counterfactual world.
    :param max_plate_nesting: number of plate dims of the model (default: inferred).
    :raises CounterfactualError: for ``obs=`` / ``pyro.condition`` on a mechanism site.
    :raises NoiseRepresentationError: for a site whose noise cannot be shared.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(2 * x, 1.0))
        >>> with TwinWorldCounterfactual({"x": 1.0, "y": 3.0}, {"x": 0.0}) as cf:
        ...     y = model()
        >>> cf.gather(y, "factual").item(), cf.gather(y, "counterfactual").item()
        (3.0, 1.0)
    """

    def __init__(
        self,
        observations: Mapping[str, Any] | None = None,
        interventions: Mapping[str, Intervention] | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(
            (COUNTERFACTUAL,),
            {COUNTERFACTUAL: dict(interventions or {})},
            observations,
            max_plate_nesting,
        )


def twin_world(
    fn: Callable | None = None,
    observations: Mapping[str, Any] | None = None,
    interventions: Mapping[str, Intervention] | None = None,
    max_plate_nesting: int | None = None,
) -> Any:
    """Functional form of :class:`TwinWorldCounterfactual`.

    :returns: ``fn`` wrapped in the handler, or the handler when ``fn`` is ``None``.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> twin_world(model, interventions={"x": 5.0})().shape
        torch.Size([2])
    """
    handler = TwinWorldCounterfactual(observations, interventions, max_plate_nesting)
    return handler(fn) if fn is not None else handler
